"""Every route that starts a job refuses at request time what its job would refuse, with the job's code.

One table, route by route: each unsupported or invalid combination is a 4xx with its code, creates no
job and changes nothing. The jobs keep their own checks: run directly (or after the state changed behind
an accepted request) they refuse with the same codes, never ``internal_error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders.errors import TroveError
from index.catalog import Catalog
from index.compression.spec import CompressionSpec, MatryoshkaSpec, QuantizerSpec
from index.ingest.builds import BuildOptions, run_build
from index.ingest.sources import Source
from index.models import backfill, rebuild, upgrades
from index.relevance.fit import Example, FitOptions
from index.storage.text_index import TextIndexSpec
from service.app import create_app
from service.jobs import Job, JobRunner
from service.settings import Settings
from tests.conftest import wait_ready
from tests.corpus import stdlib_sentences

TEXTS = stdlib_sentences(60)
EXAMPLES = [{"query": t.split()[0], "relevant": [i]} for i, t in enumerate(TEXTS[:12])]


def _noop(*_: object) -> None:
    return None


@dataclass
class Env:
    client: TestClient
    refs: dict[str, str]  # what bodies name as "@name": the module's files, and "static" (the distilled model)
    upgrade_id: str  # a fitted, unpromoted reproject upgrade of "upgraded", which has been compressed since
    static_model: str

    @property
    def catalog(self) -> Catalog:
        catalog: Catalog = self.client.app.state.catalog  # type: ignore[attr-defined]
        return catalog

    @property
    def jobs(self) -> JobRunner:
        jobs: JobRunner = self.client.app.state.jobs  # type: ignore[attr-defined]
        return jobs

    def wait(self, job_id: str) -> Job:
        return self.jobs.wait(job_id, timeout=300)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("@"):
            return self.refs[value[1:]]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value


def _texts(client: TestClient, collection: str, n: int) -> None:
    answer = client.put(f"/v1/collections/{collection}/points", json={"points": [{"id": i, "text": t} for i, t in enumerate(TEXTS[:n])]})
    assert answer.status_code == 200, answer.text


def _write_files(folder: Path) -> dict[str, str]:
    good = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS[:5]))
    contents = {
        "good.jsonl": good,
        "bad_json.jsonl": '{"id": 1, "text": "fine"\n' + good,
        "all_bad.jsonl": "{oops\n[1, 2]\n{\"id\": 3}\n",
        "dup.jsonl": '{"id": 1, "text": "one"}\n{"id": 1, "text": "again"}\n',
        "one_vector.jsonl": json.dumps({"id": 1, "vector": [0.5] * 384}) + "\n",
        "empty.jsonl": "\n\n",
        "ids.txt": "a\nb\n",
        "examples.jsonl": "".join(json.dumps(e) + "\n" for e in EXAMPLES),
        "examples_bad_row.jsonl": "".join(json.dumps(e) + "\n" for e in EXAMPLES) + "{not json\n",
        "examples_str_relevant.jsonl": json.dumps({"query": "a query", "relevant": "12"}) + "\n",
        "examples_object_id.jsonl": json.dumps({"query": "a query", "relevant": [{"id": 1}]}) + "\n",
        "examples_two.jsonl": "".join(json.dumps(e) + "\n" for e in EXAMPLES[:2]),
    }
    for name, text in contents.items():
        (folder / name).write_text(text)
    rng = np.random.default_rng(0)
    np.save(folder / "m8.npy", rng.normal(size=(3, 8)).astype(np.float32))
    np.save(folder / "m5.npy", rng.normal(size=(3, 5)).astype(np.float32))
    np.save(folder / "v1d.npy", rng.normal(size=8).astype(np.float32))
    return {path.stem: str(path) for path in folder.iterdir()} | {"missing": str(folder / "missing.jsonl")}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, static_model: str) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("refusals")
    files_dir = root / "files"
    files_dir.mkdir()
    # The optimizer loop stays idle, so only the requests under test could add to the job list.
    settings = Settings(data_dir=root / "data", models_dir=models_dir, optimizer_interval_s=3600, build_source_dirs=[files_dir])
    client = TestClient(create_app(settings), client=("127.0.0.1", 50000))
    client.__enter__()
    wait_ready(client)
    created = {
        "dense": {},
        "few": {},
        "vectors": {"dim": 8, "metric": "ip"},
        "multi": {"multivector": True},
        "l2": {"metric": "l2"},
        "hnsw": {"index": {"type": "hnsw"}},
        "compressed": {"compression": {"quantizer": {"kind": "int8"}}},
        "learned": {"compression": {"quantizer": {"kind": "binary", "learned": True}}},
        "upgraded": {"model": static_model},
        "indexed": {"text_index": {}},
    }
    for name, body in created.items():
        answer = client.post("/v1/collections", json={"name": name, **body})
        assert answer.status_code == 201, answer.text
    for name, n in {"dense": 40, "few": 5, "multi": 3, "compressed": 25, "upgraded": 40}.items():
        _texts(client, name, n)
    vectors = np.random.default_rng(1).normal(size=(40, 8))
    client.put("/v1/collections/vectors/points", json={"points": [{"id": i, "vector": v.tolist()} for i, v in enumerate(vectors)]})
    environment = Env(client, _write_files(files_dir) | {"static": static_model}, "", static_model)
    indexed = client.post("/v1/collections/vectors/indexes", json={"key": "g", "type": "keyword"})
    assert environment.wait(indexed.json()["job_id"]).state == "succeeded"
    # A reproject upgrade fitted before compression was: its promotion is what the reproject job would refuse.
    fitted = client.post("/v1/collections/upgraded/upgrades", json={"model": "minilm-l6", "mode": "reproject", "method": "ridge", "sample": 50})
    job = environment.wait(fitted.json()["job_id"])
    assert job.state == "succeeded", job.error
    assert job.result is not None
    environment.upgrade_id = job.result["upgrade_id"]
    compressed = client.put("/v1/collections/upgraded/compression", json={"quantizer": {"kind": "int8"}})
    assert environment.wait(compressed.json()["job_id"]).state == "succeeded"
    yield environment
    client.__exit__(None, None, None)


@dataclass(frozen=True)
class Refusal:
    id: str
    collection: str
    method: str
    route: str  # after /v1/collections/{collection}; "{upgrade}" is the fitted upgrade's id
    body: dict[str, Any] | None
    status: int
    code: str


def jsonl(path: str, **options: Any) -> dict[str, Any]:
    return {"source": {"path": path, "format": "jsonl"}, **options}


def npy(path: str, **source: Any) -> dict[str, Any]:
    return {"source": {"path": path, "format": "npy", **source}}


INT8 = {"quantizer": {"kind": "int8"}}
UNKNOWN = "0" * 32  # an upgrade id of the right form (32 hex digits) that no upgrade has

REFUSALS = [
    # POST .../builds
    Refusal("build-multivector", "multi", "post", "builds", jsonl("@one_vector"), 400, "vector_not_supported"),
    Refusal("build-missing-file", "dense", "post", "builds", jsonl("@missing"), 400, "source_unreadable"),
    Refusal("build-missing-ids-file", "vectors", "post", "builds", npy("@m8", ids_path="@missing"), 400, "source_unreadable"),
    Refusal("build-ids-path-on-jsonl", "dense", "post", "builds", {"source": {"path": "@good", "format": "jsonl", "ids_path": "@ids"}}, 400, "ids_path_not_supported"),
    Refusal("build-jsonl-named-parquet", "dense", "post", "builds", {"source": {"path": "@good", "format": "parquet"}}, 400, "invalid_parquet"),
    Refusal("build-jsonl-named-npy", "vectors", "post", "builds", npy("@good"), 400, "invalid_npy"),
    Refusal("build-npy-not-a-matrix", "vectors", "post", "builds", npy("@v1d"), 400, "invalid_npy"),
    Refusal("build-npy-wrong-dimension", "vectors", "post", "builds", npy("@m5"), 400, "wrong_dimension"),
    Refusal("build-npy-ids-mismatch", "vectors", "post", "builds", npy("@m8", ids_path="@ids"), 400, "ids_mismatch"),
    Refusal("build-bad-first-row", "dense", "post", "builds", jsonl("@bad_json"), 400, "invalid_json"),
    Refusal("build-duplicate-id", "dense", "post", "builds", jsonl("@dup"), 400, "duplicate_id"),
    Refusal("build-text-without-model", "vectors", "post", "builds", jsonl("@good"), 400, "text_not_supported"),
    Refusal("build-empty-file", "dense", "post", "builds", jsonl("@empty"), 400, "empty_source"),
    Refusal("build-only-bad-rows-skipped", "dense", "post", "builds", jsonl("@all_bad", on_error="skip"), 400, "empty_source"),
    Refusal("build-unknown-collection", "nope", "post", "builds", jsonl("@good"), 404, "collection_not_found"),
    # POST .../relevance
    Refusal("relevance-without-model", "vectors", "post", "relevance", {"examples": EXAMPLES}, 400, "text_not_supported"),
    Refusal("relevance-empty-collection", "hnsw", "post", "relevance", {"examples": EXAMPLES}, 400, "too_few_points"),
    Refusal("relevance-too-few-examples", "dense", "post", "relevance", {"examples": EXAMPLES[:2]}, 400, "too_few_examples"),
    Refusal("relevance-blank-query", "dense", "post", "relevance", {"examples": [*EXAMPLES, {"query": "  ", "relevant": [1]}]}, 400, "empty_text"),
    Refusal("relevance-missing-file", "dense", "post", "relevance", {"path": "@missing"}, 400, "source_unreadable"),
    Refusal("relevance-file-bad-row", "dense", "post", "relevance", {"path": "@examples_bad_row"}, 400, "invalid_json"),
    Refusal("relevance-file-relevant-not-a-list", "dense", "post", "relevance", {"path": "@examples_str_relevant"}, 400, "bad_row"),
    Refusal("relevance-file-object-id", "dense", "post", "relevance", {"path": "@examples_object_id"}, 400, "invalid_id"),
    Refusal("relevance-file-too-few", "dense", "post", "relevance", {"path": "@examples_two"}, 400, "too_few_examples"),
    Refusal("relevance-refit-without-examples", "dense", "post", "relevance", {"refit": True}, 404, "no_stored_examples"),
    Refusal("relevance-two-sources", "dense", "post", "relevance", {"examples": EXAMPLES, "path": "@examples"}, 400, "invalid_relevance_request"),
    # PUT .../compression
    Refusal("compression-multivector", "multi", "put", "compression", {"matryoshka": {"dim": 3000}}, 400, "compression_dim_too_large"),
    Refusal("compression-too-few-points", "few", "put", "compression", INT8, 400, "too_few_points"),
    Refusal("compression-leanvec-above-points", "dense", "put", "compression", {"leanvec": {"dim": 64}}, 400, "too_few_points"),
    Refusal("compression-l2", "l2", "put", "compression", INT8, 400, "compression_metric_unsupported"),
    Refusal("compression-hnsw", "hnsw", "put", "compression", INT8, 400, "compression_index_unsupported"),
    Refusal("compression-dim-too-large", "dense", "put", "compression", {"matryoshka": {"dim": 1000}}, 400, "compression_dim_too_large"),
    Refusal("compression-ood-without-queries", "dense", "put", "compression", {"leanvec": {"dim": 32, "variant": "ood"}}, 400, "queries_required"),
    Refusal("compression-ood-text-without-model", "vectors", "put", "compression", {"leanvec": {"dim": 4, "variant": "ood", "queries": TEXTS[:20]}}, 400, "text_not_supported"),
    Refusal("compression-bits-on-int8", "dense", "put", "compression", {"quantizer": {"kind": "int8", "bits": 2}}, 400, "invalid_bits"),
    Refusal("compression-funnel-and-quantizer", "dense", "put", "compression", {"matryoshka": {"funnel": [64, 128]}, **INT8}, 400, "compression_conflict"),
    # POST .../upgrades
    Refusal("upgrade-multivector-reproject", "multi", "post", "upgrades", {"model": "minilm-l6", "mode": "reproject"}, 400, "upgrade_unsupported"),
    Refusal("upgrade-without-model", "vectors", "post", "upgrades", {"model": "minilm-l6"}, 400, "upgrade_needs_model"),
    Refusal("upgrade-same-model", "dense", "post", "upgrades", {"model": "minilm-l6"}, 400, "same_model"),
    Refusal("upgrade-unknown-model", "dense", "post", "upgrades", {"model": "no-such-model"}, 404, "model_not_found"),
    Refusal("upgrade-reproject-compressed", "compressed", "post", "upgrades", {"model": "@static", "mode": "reproject"}, 409, "reproject_compressed"),
    Refusal("upgrade-learned-codes", "learned", "post", "upgrades", {"model": "@static"}, 409, "upgrade_learned_codes"),
    Refusal("upgrade-too-few-texts", "few", "post", "upgrades", {"model": "@static"}, 400, "sample_too_small"),
    # POST .../upgrades/{id}/promote (a reproject upgrade's promotion is a job)
    Refusal("promote-reproject-compressed-since", "upgraded", "post", "upgrades/{upgrade}/promote", None, 409, "reproject_compressed"),
    Refusal("promote-unknown-upgrade", "upgraded", "post", f"upgrades/{UNKNOWN}/promote", None, 404, "upgrade_not_found"),
    # POST .../upgrades/{id}/backfill
    Refusal("backfill-not-serving", "upgraded", "post", "upgrades/{upgrade}/backfill", None, 409, "not_serving"),
    Refusal("backfill-unknown-upgrade", "upgraded", "post", f"upgrades/{UNKNOWN}/backfill", {"rate": 5}, 404, "upgrade_not_found"),
    # POST .../upgrades/{id}/rebuild (the refusals of a query_side upgrade: tests/test_upgrades.py)
    Refusal("rebuild-reproject-upgrade", "upgraded", "post", "upgrades/{upgrade}/rebuild", None, 409, "rebuild_needs_query_side"),
    Refusal("rebuild-unknown-upgrade", "upgraded", "post", f"upgrades/{UNKNOWN}/rebuild", None, 404, "upgrade_not_found"),
    # PUT .../text_index
    Refusal("text-index-exists", "indexed", "put", "text_index", {"tokenizer": "trigram"}, 409, "text_index_exists"),
    Refusal("text-index-unknown-collection", "nope", "put", "text_index", {}, 404, "collection_not_found"),
    # POST .../indexes
    Refusal("payload-index-exists", "vectors", "post", "indexes", {"key": "g", "type": "integer"}, 409, "payload_index_exists"),
    Refusal("payload-index-unknown-collection", "nope", "post", "indexes", {"key": "g", "type": "keyword"}, 404, "collection_not_found"),
]


def _state(env: Env, collection: str) -> dict[str, Any]:
    """What a refused request must leave as it was: the job list, every collection's info, the target's upgrades."""
    http = env.client
    return {
        "jobs": [j["id"] for j in http.get("/v1/jobs").json()["jobs"]],
        "collections": http.get("/v1/collections").json()["collections"],
        "upgrades": http.get(f"/v1/collections/{collection}/upgrades").json(),
    }


@pytest.mark.parametrize("case", REFUSALS, ids=[c.id for c in REFUSALS])
def test_job_routes_refuse_at_request_time(env: Env, case: Refusal) -> None:
    before = _state(env, case.collection)
    url = f"/v1/collections/{case.collection}/{case.route.format(upgrade=env.upgrade_id)}"
    answer = env.client.request(case.method.upper(), url, json=env.resolve(case.body))
    assert answer.status_code == case.status, answer.text
    error = answer.json()["error"]
    assert error["code"] == case.code and error["message"], error
    assert _state(env, case.collection) == before


def test_every_job_starting_route_is_in_the_table(env: Env) -> None:
    """A new job-starting route needs its rows above: each one found in the OpenAPI schema has a refusal."""
    starting = {
        path.removeprefix("/v1/collections/{name}/").replace("{upgrade_id}", "{upgrade}")
        for path, methods in env.client.get("/openapi.json").json()["paths"].items()
        for operation in methods.values()
        if "202" in operation["responses"]
    }
    assert starting == {c.route for c in REFUSALS if UNKNOWN not in c.route}


# The job bodies themselves, run on the same collections: each refuses with its route's code.
JOB_RUNS: dict[str, Callable[[Env], object]] = {
    "build-multivector": lambda env: run_build(env.catalog.get("multi"), Source(Path(env.refs["one_vector"]), "jsonl"), BuildOptions(), _noop),
    "build-missing-file": lambda env: run_build(env.catalog.get("dense"), Source(Path(env.refs["missing"]), "jsonl"), BuildOptions(), _noop),
    "relevance-too-few-examples": lambda env: env.catalog.get("dense").relevance.fit([Example("a", (1,))] * 2, FitOptions(), _noop),
    # Checked against the FDE width (2560 with the default muvera settings), not the 384-d token vectors.
    "compression-multivector": lambda env: env.catalog.get("multi").compression.fit(CompressionSpec(matryoshka=MatryoshkaSpec(dim=3000)), None, _noop),
    "compression-too-few-points": lambda env: env.catalog.get("few").compression.fit(CompressionSpec(quantizer=QuantizerSpec("int8")), None, _noop),
    "upgrade-multivector-reproject": lambda env: upgrades.run_upgrade(
        env.catalog.get("multi"), env.catalog.registry.get("minilm-l6"), upgrades.UpgradeOptions(model="minilm-l6", mode="reproject"), "x", _noop
    ),
    "upgrade-reproject-compressed": lambda env: upgrades.run_upgrade(
        env.catalog.get("compressed"), env.catalog.registry.get(env.static_model), upgrades.UpgradeOptions(model=env.static_model, mode="reproject"), "x", _noop
    ),
    "upgrade-learned-codes": lambda env: upgrades.run_upgrade(
        env.catalog.get("learned"), env.catalog.registry.get(env.static_model), upgrades.UpgradeOptions(model=env.static_model), "x", _noop
    ),
    "upgrade-too-few-texts": lambda env: upgrades.run_upgrade(
        env.catalog.get("few"), env.catalog.registry.get(env.static_model), upgrades.UpgradeOptions(model=env.static_model), "x", _noop
    ),
    "promote-reproject-compressed-since": lambda env: upgrades.promote(env.catalog.get("upgraded"), env.upgrade_id, False),
    "backfill-not-serving": lambda env: backfill.run_backfill(env.catalog.get("upgraded"), env.upgrade_id, None, _noop),
    "rebuild-reproject-upgrade": lambda env: rebuild.run_rebuild(env.catalog.get("upgraded"), env.upgrade_id, _noop),
    "text-index-exists": lambda env: env.catalog.get("indexed").indexes.build_text(TextIndexSpec("trigram"), _noop),
}


@pytest.mark.parametrize("case_id", list(JOB_RUNS))
def test_jobs_keep_their_own_checks(env: Env, case_id: str) -> None:
    expected = next(c.code for c in REFUSALS if c.id == case_id)
    before = _state(env, "upgraded")
    with pytest.raises(TroveError) as refused:
        JOB_RUNS[case_id](env)
    assert refused.value.code == expected
    assert _state(env, "upgraded") == before


def test_state_that_changes_after_acceptance_fails_the_job_with_a_code(env: Env) -> None:
    """Accepted while valid, invalid by the time the job runs: the job names the cause; nothing says internal_error."""
    http = env.client
    for name in ("later", "served"):
        assert http.post("/v1/collections", json={"name": name, "model": env.static_model}).status_code == 201
        _texts(http, name, 40)
    fitted = env.wait(http.post("/v1/collections/served/upgrades", json={"model": "minilm-l6", "sample": 50}).json()["job_id"])
    assert fitted.state == "succeeded" and fitted.result is not None, fitted.error
    upgrade_id = fitted.result["upgrade_id"]
    assert http.post(f"/v1/collections/served/upgrades/{upgrade_id}/promote", json={"force": True}).status_code == 200
    # One job worker: a backfill paced at one point per 100 s holds it while the state changes.
    blocker = http.post(f"/v1/collections/served/upgrades/{upgrade_id}/backfill", json={"rate": 0.01}).json()["job_id"]
    source = Path(env.refs["good"]).parent / "later.jsonl"  # where the jobs may read
    source.write_text("".join(json.dumps({"id": 100 + i, "text": t}) + "\n" for i, t in enumerate(TEXTS[40:50])))
    accepted = {
        "source_unreadable": http.post("/v1/collections/later/builds", json=jsonl(str(source))),
        "too_few_points": http.put("/v1/collections/later/compression", json=INT8),
        "sample_too_small": http.post("/v1/collections/later/upgrades", json={"model": "minilm-l6", "sample": 50}),
    }
    assert all(a.status_code == 202 for a in accepted.values()), [a.text for a in accepted.values()]
    source.unlink()
    assert http.post("/v1/collections/later/points/delete", json={"ids": list(range(30))}).status_code == 200
    http.delete(f"/v1/jobs/{blocker}")
    assert env.wait(blocker).state == "cancelled"
    for code, answer in accepted.items():
        job = env.wait(answer.json()["job_id"])
        assert job.state == "failed" and job.error is not None and job.error["code"] == code, job
    assert http.get("/v1/collections/later").json()["points"] == 10
