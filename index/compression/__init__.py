"""Compressed multi-stage search: the config, the fitted generations, the per-segment multi-stage index."""
