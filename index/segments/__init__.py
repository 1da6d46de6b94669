"""A collection's vectors as segments: one appendable segment for new writes, sealed ones built off the write path.

- appendable.py: the growing segment, searched exactly.
- sealed.py: a segment written once to its folder, with its FAISS or compressed index.
- view.py: what a query searches: an immutable snapshot of every segment and its deletion bitmap.
- engine.py: the segments of one collection: writes, views, rebuilds (seal, merge, vacuum), persistence.
- policy.py: which rebuilds the optimizer runs, and when.
"""
