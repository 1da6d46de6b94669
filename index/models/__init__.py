"""Model versions of a collection: serving state, upgrades (fit, promote, rollback) and backfill."""
