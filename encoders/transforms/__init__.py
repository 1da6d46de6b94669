"""Transforms from vectors to codes: each fits, encodes docs and queries (they may differ), saves and loads itself."""
