"""A collection's fitted compression on disk: generations, the pointer to the serving one, its fit report.

```
<collection>/compression/
  current.json                  {"generation": "g000003"}: the fitted generation being served
  queries.npy                   query samples given with the config (LeanVec-OOD), kept until a fit uses them
  g000003/
    state.json                  the config it was fitted for, the model, the fit report (chosen depths, held queries, stages' recall@10)
    pipeline/<n>_<stage>/       the fitted transforms (encoders/transforms/base.py Pipeline)
    rerank_int8/                the int8 rerank quantizer, when rerank.with is int8
    queries.npy                 the query samples the fit used
```

Each sealed segment holds its own stage files (index/segments/sealed.py) and names the generation that
encoded them. A fit writes a new generation beside the serving one and switches ``current.json`` (written
to a temporary file and renamed) only when it is complete, so a crash leaves the old state or the new one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.transforms.base import Pipeline, Transform
from encoders.transforms.lvq import Int8Quantizer
from index.backends.faiss_index import IndexSpec
from index.compression.multistage import MultiStageIndex, SearchDepth
from index.compression.spec import CompressionSpec
from index.storage import atomic

POINTER = "current.json"
QUERIES = "queries.npy"


@dataclass
class FittedCompression:
    folder: Path
    spec: CompressionSpec
    pipeline: Pipeline
    rerank_int8: Int8Quantizer | None
    report: dict[str, Any]

    def open_index(self, folder: Path, dim: int, index: IndexSpec, rows: int = 0) -> MultiStageIndex:
        """The multi-stage index of one sealed segment, whose stage files live in ``folder``; ``index`` shapes its coarse stage,
        the fit's chosen depths (once measured) how deep each stage searches."""
        return MultiStageIndex(folder, dim, self.spec, self.pipeline, self.rerank_int8, index, rows=rows, depth=self.depth)

    @property
    def depth(self) -> SearchDepth | None:
        """The depths the fit chose or measured (None before it measured: the config's oversample, halving)."""
        search = self.report.get("search")
        return SearchDepth.from_json(search) if search else None

    def save_transforms(self) -> None:
        self.pipeline.save(self.folder / "pipeline")
        if self.rerank_int8 is not None:
            self.rerank_int8.save(self.folder / "rerank_int8")

    def save_state(self) -> None:
        atomic.write_json(self.folder / "state.json", {"compression": self.spec.to_json(), **self.report})

    @classmethod
    def load(cls, folder: Path) -> FittedCompression:
        state = json.loads((folder / "state.json").read_text())
        rerank = Transform.load(folder / "rerank_int8") if (folder / "rerank_int8").is_dir() else None
        assert rerank is None or isinstance(rerank, Int8Quantizer)
        return cls(folder, CompressionSpec.from_json(state.pop("compression")), Pipeline.load(folder / "pipeline"), rerank, state)


def root(collection_root: Path) -> Path:
    return collection_root / "compression"


def current(collection_root: Path) -> FittedCompression | None:
    pointer = root(collection_root) / POINTER
    if not pointer.exists():
        return None
    return FittedCompression.load(root(collection_root) / json.loads(pointer.read_text())["generation"])


def new_generation(collection_root: Path) -> Path:
    folder = root(collection_root)
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in folder.glob("g*") if p.name[1:].isdigit()]
    generation = folder / f"g{max(numbers, default=0) + 1:06d}"
    generation.mkdir()
    return generation


def commit(collection_root: Path, generation: Path) -> None:
    """Serve ``generation`` from now on and drop every other generation."""
    atomic.write_json(root(collection_root) / POINTER, {"generation": generation.name, "at": time.time()})
    drop_other_generations(collection_root, keep=generation)


def drop_other_generations(collection_root: Path, keep: Path | None) -> None:
    for old in root(collection_root).glob("g*"):
        if old.is_dir() and old != keep:
            shutil.rmtree(old, ignore_errors=True)


def save_queries(folder: Path, queries: np.ndarray | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / QUERIES
    if queries is None:
        path.unlink(missing_ok=True)
        return
    atomic.write_npy(path, np.asarray(queries, np.float32))


def load_queries(folder: Path) -> np.ndarray | None:
    path = folder / QUERIES
    return np.load(path) if path.exists() else None
