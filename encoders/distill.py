"""A second real model made offline: a model2vec static model distilled from the bundled MiniLM.

Distillation embeds every token of MiniLM's vocabulary with MiniLM itself, reduces the table by PCA and
weights it by token frequency (model2vec's recipe). No download: the source is the bundled folder. The
result is cached in a folder (never committed); tests and benchmarks get it through ``distilled_minilm``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from encoders.file_lock import exclusive
from encoders.registry import bundled_minilm_folder

PROVENANCE = "trove_distill.json"


def distilled_name(dim: int) -> str:
    return f"minilm-l6-static{dim}"


def distilled_minilm(cache_dir: Path, dim: int = 256) -> Path:
    """The folder of MiniLM distilled to a ``dim``-d static model under ``cache_dir``, distilled on first use.

    The folder name doubles as the model name, so ``cache_dir`` can serve as a models dir.
    """
    folder = cache_dir / distilled_name(dim)
    if (folder / PROVENANCE).exists():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One process distills, the others (parallel test workers, servers) wait for its folder: minutes of CPU once.
    with exclusive(cache_dir / f".{folder.name}.lock"):
        if (folder / PROVENANCE).exists():
            return folder
        return _distill(folder, dim)


def _distill(folder: Path, dim: int) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model2vec.distill.distillation import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    source = bundled_minilm_folder()
    started = time.perf_counter()
    model = AutoModel.from_pretrained(str(source), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    static = distill_from_model(model, tokenizer, pca_dims=dim, device="cpu")
    seconds = time.perf_counter() - started
    # Write beside the final folder and rename, so an interrupted distill never leaves half a model.
    staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")  # dot-prefixed: a models dir never lists it
    shutil.rmtree(staging, ignore_errors=True)
    static.save_pretrained(str(staging))
    provenance = {"source_model": "minilm-l6", "source": str(source), "dim": dim, "method": "model2vec distill (PCA, SIF 1e-4)", "seconds": round(seconds, 1)}
    (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2))
    staging.rename(folder)
    return folder
