"""Benchmarks and the labelled data sets they run on (run from the repo root as `python -m bench.<module>`)."""
