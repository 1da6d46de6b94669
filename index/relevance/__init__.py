"""Relevance filtering: calibrators (the cosine adapter and baselines) and their fit."""
