"""Options every suite shares, as typer `Annotated` aliases so each suite declares them in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bench.report import RESULTS_DIR

Source = Annotated[str, typer.Option(help="'wordnet' (needs bench/install_wordnet.sh), 'wordnet:N' (its first N glosses), or an .npz with 'docs' and 'queries'.")]
Docs = Annotated[Optional[int], typer.Option(help="Use only the first N documents of the source (default: all).")]
Queries = Annotated[int, typer.Option(help="Queries sampled from each side of the tuning/test split.")]
Out = Annotated[Path, typer.Option(help="Folder for <suite>.json, <suite>.md and the PNG plots.")]
Threads = Annotated[int, typer.Option(help="Threads every system may use to build and search.")]
SyntheticDocs = Annotated[int, typer.Option(help="Size of the synthetic set fitted to the source (0 skips it).")]

DEFAULT_OUT = RESULTS_DIR
DEFAULT_THREADS = 2


def csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())
