"""Stores and searches: SQLite (the source of truth), FAISS (derived), snapshots and collections. No HTTP."""
