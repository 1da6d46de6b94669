"""Sharded collections: N segment-engine collections behind one, in this process or as Ray actors (cluster mode)."""
