"""`trove models list | add | remove`: folders checked by loading them, installed with a provenance record, seen by a running server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from encoders.errors import AlreadyExists, InvalidInput
from encoders.install import install, remove
from encoders.registry import DEFAULT_MODEL, PROVENANCE, ModelRegistry, bundled_minilm_folder
from tests.conftest import ROOT, ServerProcess


def trove(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "service.cli", *args, "--data-dir", str(data_dir)], check=False, env=env, capture_output=True, text=True, timeout=600)


def copy_of(folder: Path, into: Path, drop: tuple[str, ...] = ()) -> Path:
    target = into / folder.name
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("trove_backends", PROVENANCE, *drop))
    return target


def test_add_a_static_folder_reports_what_it_is_and_lists_it(models_dir: Path, static_model: str, tmp_path: Path) -> None:
    added = trove("models", "add", str(models_dir / static_model), "--name", "static-a", data_dir=tmp_path / "data")
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    assert (record["name"], record["family"], record["dim"]) == ("static-a", "model2vec", 256)
    assert abs(record["test_encode"]["norm"] - 1.0) < 1e-3 and record["source"] == str((models_dir / static_model).resolve())
    installed = tmp_path / "data" / "models" / "static-a"
    assert json.loads((installed / PROVENANCE).read_text())["sha256"] == record["sha256"]
    listed = [json.loads(line) for line in trove("models", "list", data_dir=tmp_path / "data").stdout.splitlines()]
    assert [(m["name"], m["dim"]) for m in listed] == [(DEFAULT_MODEL, 384), ("static-a", 256)]
    # The installed copy embeds as the folder it came from.
    texts = ["a small test", "another sentence about retrieval"]
    registry = ModelRegistry(tmp_path / "data" / "models")
    assert (registry.get("static-a").encode_docs(texts) == ModelRegistry(models_dir).get(static_model).encode_docs(texts)).all()


def test_add_a_sentence_transformers_folder_reports_dim_and_max_tokens(tmp_path: Path) -> None:
    record = install(bundled_minilm_folder(), tmp_path / "models", "minilm-copy")
    assert (record["family"], record["dim"], record["max_tokens"]) == ("sentence-transformers", 384, 256)
    assert ModelRegistry(tmp_path / "models").describe("minilm-copy").dim == 384
    with pytest.raises(AlreadyExists):
        install(bundled_minilm_folder(), tmp_path / "models", "minilm-copy")
    remove(tmp_path / "models", "minilm-copy")
    assert ModelRegistry(tmp_path / "models").names() == [DEFAULT_MODEL]


def test_broken_folders_are_refused_naming_what_is_wrong_and_install_nothing(models_dir: Path, static_model: str, tmp_path: Path) -> None:
    no_weights = copy_of(models_dir / static_model, tmp_path / "a", drop=("model.safetensors",))
    result = trove("models", "add", str(no_weights), data_dir=tmp_path / "data")
    assert result.returncode == 2 and "model_load_failed" in result.stderr and str(no_weights) in result.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a model")
    with pytest.raises(InvalidInput) as err:
        install(empty, tmp_path / "data" / "models")
    assert err.value.code == "invalid_model_folder" and "notes.txt" in err.value.message

    garbled = copy_of(models_dir / static_model, tmp_path / "b")
    (garbled / "modules.json").write_text("{not json")
    with pytest.raises(InvalidInput) as err:
        install(garbled, tmp_path / "data" / "models")
    assert err.value.code == "invalid_model_folder" and "modules.json" in err.value.message

    with pytest.raises(InvalidInput) as err:
        install(tmp_path / "missing", tmp_path / "data" / "models")
    assert err.value.code == "invalid_model_folder"
    for name in ("../x", ".hidden", DEFAULT_MODEL):
        with pytest.raises(InvalidInput):
            install(models_dir / static_model, tmp_path / "data" / "models", name)
    models = tmp_path / "data" / "models"
    assert not models.exists() or list(models.iterdir()) == []  # no half-installed folder, no staging left behind


def test_wrong_kinds_are_refused(models_dir: Path, static_model: str, tmp_path: Path) -> None:
    # A bare transformers model: config.json and weights, no sentence-transformers modules.json to pool with.
    bare = tmp_path / "bare-bert"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        shutil.copy(bundled_minilm_folder() / name, bare / name)
    result = trove("models", "add", str(bare), data_dir=tmp_path / "data")
    assert result.returncode == 2 and "wrong_model_kind" in result.stderr and "modules.json" in result.stderr and "'bert'" in result.stderr
    with pytest.raises(InvalidInput) as err:
        install(models_dir / static_model, tmp_path / "models", kind="sentence-transformers")
    assert err.value.code == "wrong_model_kind" and err.value.details["found"] == "model2vec"


def test_a_model_added_while_the_server_runs_is_listed_and_usable_without_a_restart(
    start_server: Callable[..., ServerProcess], models_dir: Path, static_model: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert [m["name"] for m in http.get("/v1/models").json()["models"]] == [DEFAULT_MODEL]
        assert http.post("/v1/collections", json={"name": "notes", "model": "static-new", "metric": "cosine"}).status_code == 404

        added = trove("models", "add", str(models_dir / static_model), "--name", "static-new", data_dir=data_dir)
        assert added.returncode == 0, added.stderr

        listed = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
        assert listed["static-new"]["dim"] == 256 and listed["static-new"]["family"] == "model2vec"
        assert http.post("/v1/collections", json={"name": "notes", "model": "static-new", "metric": "cosine"}).status_code == 201
        texts = ["the cat sat on the mat", "stock markets fell sharply", "a recipe for bread", "rain is expected tomorrow"]
        put = http.put("/v1/collections/notes/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(texts)]})
        assert put.status_code == 200
        hits = http.post("/v1/collections/notes/query", json={"text": "baking bread", "k": 2}).json()["results"]
        assert hits[0]["id"] == 2

        refused = trove("models", "remove", "static-new", data_dir=data_dir)
        assert refused.returncode == 2 and "model_in_use" in refused.stderr and "notes" in refused.stderr
        assert (data_dir / "models" / "static-new").is_dir()
