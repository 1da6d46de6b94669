"""Transforms from vectors to codes: each fits, encodes docs and queries (they may differ), saves and loads itself.

Importing the package imports every transform module, so ``Transform.load`` knows every kind.
"""

from encoders.transforms import binary, compat, leanvec, lvq, matryoshka, muvera  # noqa: F401
