"""FAISS placement: the one place that decides GPU or CPU; flat, HNSW and binary indexes over a segment's positions."""
