"""Turns inputs into vectors (models) and vectors into codes (transforms). No FAISS, no HTTP."""
