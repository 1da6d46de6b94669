"""Real English text that ships with Python: first paragraphs of stdlib docstrings."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from types import ModuleType

MODULES = (
    "argparse asyncio builtins calendar collections concurrent.futures configparser csv datetime decimal difflib "
    "email.message fractions functools gzip hashlib heapq http.client http.server imaplib inspect io ipaddress "
    "itertools json logging mailbox math multiprocessing os pathlib pickle platform poplib queue random re "
    "shutil smtplib socket sqlite3 ssl statistics string subprocess tarfile tempfile textwrap threading time "
    "tkinter turtle typing unittest urllib.parse urllib.request uuid wave xml.dom.minidom xml.etree.ElementTree "
    "zipfile zlib"
).split()


def _summary(obj: object) -> str | None:
    """The first paragraph of an object's docstring on one line, when it is sentence-sized."""
    text = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].split())
    return text if 30 <= len(text) <= 300 else None


def _modules() -> Iterator[ModuleType]:
    """The listed stdlib modules this Python can import, in a fixed order."""
    for name in MODULES:
        try:
            yield importlib.import_module(name)
        except ImportError:
            continue


def stdlib_sentences(limit: int) -> list[str]:
    """Up to ``limit`` distinct docstring paragraphs, in a fixed order."""
    seen: set[str] = set()
    for module in _modules():
        for _, member in sorted(inspect.getmembers(module), key=lambda m: m[0]):
            for obj in [member, *(v for _, v in sorted(vars(member).items()) if callable(v))] if inspect.isclass(member) else [member]:
                text = _summary(obj) if callable(obj) or inspect.ismodule(obj) else None
                if text:
                    seen.add(text)
    return sorted(seen)[:limit]


def stdlib_labelled(per_module: int = 15) -> tuple[list[str], list[str], list[list[int]]]:
    """Real labelled retrieval data: a module's own summary line is the query, its members' docstrings the relevant docs.

    Returns (doc_texts, queries, relevant doc indices per query).
    """
    docs: list[str] = []
    queries: list[str] = []
    relevant: list[list[int]] = []
    seen: set[str] = set()
    for module in _modules():
        summary = (inspect.getdoc(module) or "").split("\n")[0].strip()
        members = []
        for _, member in sorted(inspect.getmembers(module), key=lambda m: m[0]):
            if getattr(member, "__module__", None) != module.__name__ or not callable(member):
                continue
            text = _summary(member)
            if text and text not in seen:
                seen.add(text)
                members.append(text)
        if len(summary) < 10 or len(members) < 3:
            continue
        first = len(docs)
        docs += members[:per_module]
        queries.append(summary)
        relevant.append(list(range(first, len(docs))))
    return docs, queries, relevant
