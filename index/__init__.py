"""Stores and searches: SQLite (the source of truth), segments of FAISS or compressed indexes (derived), collections. No HTTP."""
