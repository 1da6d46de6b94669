"""The fixed probe set every backend is checked on against torch: words, phrases, sentences and long passages.

Changing these texts changes PROBE_VERSION's digest, which makes every cached validation stale.
"""

from __future__ import annotations

import hashlib

_WORDS = ["cat", "bank", "run", "photosynthesis", "quickly", "Zürich", "e-mail", "42", "naïve", "GPU"]
_PHRASES = [
    "interest rates",
    "a cup of tea",
    "the river bank",
    "machine learning model",
    "to run a company",
    "bright red sports car",
    "ancient Greek philosophy",
    "how do vaccines work?",
]
_SENTENCES = [
    "A cat sleeps on the warm windowsill while the rain falls outside.",
    "The central bank raised interest rates by a quarter of a percentage point.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "She ran the marathon in under three hours despite the heat.",
    "Vector databases index embeddings so that similar items can be found quickly.",
    "The committee postponed its decision until more evidence was available.",
    "a small flat-bottomed boat used on canals",
    "(of a person) having or showing a lack of experience, wisdom, or judgment",
    "Error 503: the service is temporarily unavailable; retry after 30 seconds.",
    "Die Katze schläft auf dem Sofa, und der Hund bellt im Garten.",
    "El tren sale de la estación a las ocho de la mañana.",
    "def add(a, b): return a + b  # adds two numbers",
]
_PASSAGE = (
    "The history of the region is long and varied. Farmers settled the valleys first, growing barley and raising sheep; "
    "traders followed the rivers to the coast, where small ports grew into towns. Over the centuries the towns built walls, "
    "then markets, then universities, and the valleys emptied as people moved to work in the mills. Today the old roads "
    "carry tourists instead of wool, and the mills have become museums, offices and apartments. "
)
_LONG = [_PASSAGE, _PASSAGE * 2, _PASSAGE * 4, " ".join(_SENTENCES), " ".join(_PHRASES) * 3]

PROBE_TEXTS: tuple[str, ...] = tuple(_WORDS + _PHRASES + _SENTENCES + _LONG)
PROBE_VERSION = hashlib.sha256("\x00".join(PROBE_TEXTS).encode()).hexdigest()[:16]
