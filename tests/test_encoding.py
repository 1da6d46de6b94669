"""The one encoding path (sorted, token-budget batches in the caller's order) and the backends behind it, on the real MiniLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.backend_choice import FLOAT_COSINE, REFERENCE, cosines
from encoders.base import Encoder
from encoders.batching import HOLD_PER_STREAM, BatchPolicy, plan_batches, run_batches
from encoders.errors import InvalidInput
from encoders.export import EXPORT_FOLDER, FLOAT_FILE, PROVENANCE, model_digest
from encoders.registry import DEFAULT_MODEL, ModelRegistry, bundled_minilm_folder
from encoders.runtimes import available
from encoders.threads import INFERENCE_SLOT, inference_threads, process_cores
from service.jobs import Job

MIXED = [
    "cat",
    "A cat sleeps on the warm windowsill while the rain falls outside, and the dog waits by the door for its walk.",
    "interest rates",
    "The committee postponed its decision.",
    "x",
    " ".join(["a long passage of repeated words"] * 40),  # beyond the model's 256 tokens: truncated
    "photosynthesis converts light into chemical energy",
]


@pytest.fixture(scope="module")
def default_encoder() -> Encoder:
    """MiniLM as a server loads it by default (conftest pins the other suites to a float32 backend)."""
    forced = os.environ.pop("TROVE_ENCODER_BACKEND", None)
    try:
        return ModelRegistry().get(DEFAULT_MODEL)
    finally:
        if forced is not None:
            os.environ["TROVE_ENCODER_BACKEND"] = forced


@given(st.lists(st.integers(1, 600), max_size=300), st.integers(1, 4096), st.integers(1, 300))
@settings(max_examples=200, deadline=None)
def test_batches_cover_every_text_once_within_the_budget(lengths: list[int], budget: int, max_batch: int) -> None:
    batches = plan_batches(lengths, BatchPolicy(token_budget=budget, max_batch=max_batch))
    flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    seen = [lengths[i] for i in flat]
    assert seen == sorted(seen)  # shortest first, so neighbours pad alike
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or (len(batch) * longest <= budget and len(batch) <= max_batch)


def _work(lengths: list[int], batches: list[np.ndarray], policy: BatchPolicy) -> int:
    return sum(len(b) * max(lengths[i] for i in b) + policy.batch_cost_tokens for b in batches)


def _filled_to_the_budget(lengths: list[int], policy: BatchPolicy) -> list[np.ndarray]:
    """The planner before: walk the sorted order, start a new batch when the next text would break the budget."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end - 1 > start and ((end - start) * lengths[order[end - 1]] > policy.token_budget or end - start > policy.max_batch):
            batches.append(order[start : end - 1])
            start = end - 1
    return batches + ([order[start:]] if start < len(order) else [])


@given(st.lists(st.integers(1, 300), max_size=300), st.integers(16, 4096), st.integers(0, 400))
@settings(max_examples=200, deadline=None)
def test_the_plan_does_no_more_work_than_filling_each_batch_to_the_budget(lengths: list[int], budget: int, batch_cost: int) -> None:
    policy = BatchPolicy(token_budget=budget, batch_cost_tokens=batch_cost)
    assert _work(lengths, plan_batches(lengths, policy), policy) <= _work(lengths, _filled_to_the_budget(lengths, policy), policy)


def test_a_short_call_pads_little(default_encoder: Encoder) -> None:
    """256 mixed-length texts in one call: filling batches to the budget padded WordNet glosses 37% over their
    tokens; the plan keeps these under 12% (filling: 21%), with no more than three times the batches."""
    texts = [" ".join(["word"] * (1 + (i * 37) % 60)) for i in range(256)]  # lengths spread like glosses': 3 to 62 tokens
    lengths = default_encoder.token_lengths(texts)
    batches = plan_batches(lengths, default_encoder.policy)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    filled = _filled_to_the_budget(lengths, default_encoder.policy)
    assert padded <= 1.12 * sum(lengths) < sum(len(b) * max(lengths[i] for i in b) for b in filled)
    assert len(batches) <= 3 * len(filled)


@given(st.lists(st.text(max_size=30), max_size=80), st.integers(1, 200), st.integers(1, 4))
@settings(max_examples=100, deadline=None)
def test_results_come_back_in_the_callers_order(texts: list[str], budget: int, streams: int) -> None:
    done: list[int] = []
    holds: list[int] = []

    def embed(batches: Iterator[list[str]]) -> list[list[str]]:
        drawn = list(batches)
        holds.append(len(drawn))
        return [[t[::-1] for t in batch] for batch in drawn]

    out = run_batches(texts, [len(t) + 1 for t in texts], BatchPolicy(token_budget=budget), embed, done.append, streams)
    assert all(h <= HOLD_PER_STREAM * streams for h in holds)
    assert out == [t[::-1] for t in texts]
    assert done == sorted(done) and (not texts or done[-1] == len(texts))
    assert len(done) == len(holds), "progress after every hold of the slot"


def test_a_long_call_yields_the_slot_to_a_caller_that_arrives_at_the_next_batch() -> None:
    """A job's call feeds batch after batch; a query arriving meanwhile runs after the batch in hand, not after the call."""
    order: list[str] = []
    query_waits = threading.Event()

    def job_embed(batches: Iterator[list[str]]) -> list[list[str]]:
        out = []
        for batch in batches:
            order.append("job")
            if len(order) == 3:
                query_waits.set()
                deadline = time.monotonic() + 30
                while not INFERENCE_SLOT.wanted():  # the query holds its ticket before the job draws again
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            out.append(batch)
        return out

    def query_embed(batches: Iterator[list[str]]) -> list[list[str]]:
        drawn = list(batches)
        order.append("query")
        return drawn

    job_texts = [f"t{i}" for i in range(40)]
    job = threading.Thread(target=lambda: run_batches(job_texts, [10] * 40, BatchPolicy(token_budget=10), job_embed, None, 4))
    job.start()
    assert query_waits.wait(30)
    assert run_batches(["q"], [1], BatchPolicy(), query_embed) == ["q"]
    job.join(30)
    assert order.index("query") == 3 and order.count("job") == 40


@given(st.lists(st.integers(1, 40), min_size=2, max_size=6), st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_concurrent_callers_never_share_the_slot_and_each_gets_its_own_answers(sizes: list[int], streams: int) -> None:
    inside = [0]
    overlaps: list[int] = []

    def embed(batches: Iterator[list[str]]) -> list[list[str]]:
        inside[0] += 1
        overlaps.append(inside[0])
        out = []
        for batch in batches:
            time.sleep(0.0005)  # a thread switch mid-hold
            out.append([t.upper() for t in batch])
        inside[0] -= 1
        return out

    def caller(which: int) -> bool:
        texts = [f"c{which}-{i}" for i in range(sizes[which])]
        return run_batches(texts, [1 + i % 5 for i in range(len(texts))], BatchPolicy(token_budget=6), embed, None, streams) == [t.upper() for t in texts]

    with ThreadPoolExecutor(len(sizes)) as pool:
        assert all(pool.map(caller, range(len(sizes))))
    assert max(overlaps) == 1


def test_fixed_policy_keeps_the_old_unsorted_batches() -> None:
    batches = plan_batches([5, 1, 9, 2, 7], BatchPolicy(fixed=2))
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4]]


def test_one_call_equals_each_text_alone_in_order(default_encoder: Encoder) -> None:
    """Sorting and batching change nothing a caller sees: row i is text i, as if it had been embedded alone."""
    encoder = default_encoder
    together = encoder.encode_docs(MIXED)
    alone = np.concatenate([encoder.encode_docs([t]) for t in MIXED])
    assert cosines(together, alone).min() > 0.999
    # and the rows really differ, so the check above could fail on a mix-up
    assert cosines(together, np.roll(alone, 1, axis=0)).max() < 0.95
    tokens = encoder.encode_tokens(MIXED)
    assert [t.shape[0] for t in tokens] == [len(t.ids) - 2 for t in _tokenize(MIXED)]


@given(st.lists(st.sampled_from(MIXED + ["  padded with spaces  ", "UPPER case", ""]), min_size=1, max_size=12), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None)
def test_a_batch_of_texts_tokenised_once_is_what_the_model_would_tokenise(default_encoder: Encoder, texts: list[str], random) -> None:  # noqa: ANN001 (hypothesis Random)
    """Texts are tokenised once per call and each batch is padded from their ids: every array must be the one
    the model's own preprocessing makes of that batch (any subset, in any order, as the plan draws them)."""
    import torch

    rows, lengths = default_encoder._inputs(texts)  # type: ignore[attr-defined]
    picked = random.sample(range(len(texts)), random.randint(1, len(texts)))
    batch = default_encoder._features([rows[i] for i in picked])  # type: ignore[attr-defined]
    expected = {k: v.numpy() for k, v in default_encoder._model.preprocess([texts[i] for i in picked]).items() if isinstance(v, torch.Tensor)}  # type: ignore[attr-defined]
    assert batch.keys() == expected.keys()
    for key, array in expected.items():
        np.testing.assert_array_equal(batch[key], array, err_msg=key)
    assert [lengths[i] for i in picked] == expected["attention_mask"].sum(axis=1).tolist()


def _tokenize(texts: list[str]) -> list:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_minilm_folder() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    return tokenizer.encode_batch(texts)


def test_progress_reports_every_text(default_encoder: Encoder) -> None:
    done: list[int] = []
    default_encoder.encode_docs(MIXED * 3, done.append)
    assert done[-1] == len(MIXED) * 3 and done == sorted(done)


def test_auto_picks_the_fastest_backend_that_passed(default_encoder: Encoder) -> None:
    backend = default_encoder.info.backend
    assert backend is not None and not backend["forced"]
    passed = [r for r in backend["reports"] if r["passed"]]
    assert all(r["min_cosine"] >= FLOAT_COSINE for r in passed)
    if len(backend["reports"]) > 1:  # a CPU runtime is installed: every one was measured
        fastest = max(passed, key=lambda r: r["probe_docs_per_s"])
        assert backend["backend"] == fastest["backend"]
        assert backend["min_cosine"] >= FLOAT_COSINE


def test_exports_sit_beside_the_model_with_provenance(registry: ModelRegistry) -> None:
    if not available("onnx") and not available("openvino"):
        pytest.skip("no CPU runtime installed")
    registry.get(DEFAULT_MODEL)
    folder = bundled_minilm_folder() / EXPORT_FOLDER
    provenance = json.loads((folder / PROVENANCE).read_text())
    assert provenance[FLOAT_FILE]["model_digest"] == model_digest(bundled_minilm_folder())
    assert "torch.onnx" in provenance[FLOAT_FILE]["exporter"] and (folder / FLOAT_FILE).exists()


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino", "openvino-bf16"])
def test_a_forced_float_backend_serves_and_agrees_with_torch(backend: str, monkeypatch: pytest.MonkeyPatch, registry: ModelRegistry) -> None:
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    monkeypatch.setenv("TROVE_ENCODER_BACKEND", backend)
    encoder = ModelRegistry().get(DEFAULT_MODEL)
    assert encoder.info.backend is not None and encoder.info.backend["backend"] == backend and encoder.info.backend["forced"]
    monkeypatch.setenv("TROVE_ENCODER_BACKEND", "torch")
    reference = ModelRegistry().get(DEFAULT_MODEL).encode_docs(MIXED)
    assert cosines(encoder.encode_docs(MIXED), reference).min() >= FLOAT_COSINE


def test_int8_is_measured_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    if not available("onnx-int8"):
        pytest.skip("the onnx extra is not installed")
    monkeypatch.setenv("TROVE_ENCODER_BACKEND", "onnx-int8")
    backend = ModelRegistry().get(DEFAULT_MODEL).info.backend
    assert backend is not None and backend["backend"] == "onnx-int8" and backend["precision"].startswith("int8")
    report = next(r for r in backend["reports"] if r["backend"] == "onnx-int8")
    assert 0.5 < report["min_cosine"] < 1.0 and report["passed"] == (report["min_cosine"] >= FLOAT_COSINE)


def test_unknown_backend_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_ENCODER_BACKEND", "tensorflow")
    with pytest.raises(InvalidInput) as err:
        ModelRegistry().get(DEFAULT_MODEL)
    assert err.value.code == "unknown_encoder_backend"


def test_a_backend_that_disagrees_with_torch_at_load_is_refused_or_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_encoder: Encoder) -> None:
    """The load-time check compares the chosen backend's probe vectors with torch's kept ones; when they part, forced fails loudly, auto falls back."""
    if not available("openvino"):
        pytest.skip("openvino is not installed")
    folder = tmp_path / "minilm-copy"
    shutil.copytree(bundled_minilm_folder(), folder)
    kept = np.load(folder / EXPORT_FOLDER / REFERENCE)
    np.save(folder / EXPORT_FOLDER / REFERENCE, np.roll(kept, 1, axis=0))  # torch's vectors, each moved to another text
    monkeypatch.setenv("TROVE_ENCODER_BACKEND", "openvino")
    with pytest.raises(InvalidInput) as err:
        ModelRegistry().get(str(folder))
    assert err.value.code == "encoder_backend_inaccurate"
    monkeypatch.setenv("TROVE_ENCODER_BACKEND", "auto")
    fallen = ModelRegistry().get(str(folder)).info.backend
    assert fallen is not None and fallen["backend"] == "torch" and not fallen["forced"]


# Each child opens the runtime that writes into the shared folder, twice (the second open reads what the
# first, or another process, wrote), and embeds one batch with it.
SHARED_EXPORT_CHILD = """
import sys
from pathlib import Path
import numpy as np
from encoders.export import ensure_int8_onnx
from encoders.runtimes import OnnxRuntime, OpenVinoRuntime
out, backend = Path(sys.argv[1]), sys.argv[2]
features = {"input_ids": np.array([[101, 4937, 102]]), "attention_mask": np.ones((1, 3), np.int64), "token_type_ids": np.zeros((1, 3), np.int64)}
for _ in range(2):
    if backend == "openvino":
        runtime = OpenVinoRuntime(out / "model.onnx", 2, bf16=False)
    else:
        runtime = OnnxRuntime(ensure_int8_onnx(out, "digest-of-the-copy"), 1, backend)
    (_, pooled), = runtime.run_many([features])
    assert pooled.shape == (1, 384) and np.isfinite(pooled).all()
"""


@pytest.mark.parametrize("backend", ["openvino", "onnx-int8"])
def test_processes_sharing_a_fresh_export_folder_all_get_a_working_runtime(backend: str, tmp_path: Path, default_encoder: Encoder) -> None:
    """Servers and test workers share one export folder: OpenVINO's compiled-graph cache and the int8 quantizer's
    scratch file are written there in place. Unlocked, three processes on a fresh folder failed in 5 rounds of 6
    (a half-written cache blob read back, or one killed a test worker with a bus error)."""
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    shutil.copy(bundled_minilm_folder() / EXPORT_FOLDER / FLOAT_FILE, tmp_path / FLOAT_FILE)
    children = [
        subprocess.Popen([sys.executable, "-c", SHARED_EXPORT_CHILD, str(tmp_path), backend], cwd=Path(__file__).parents[1], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    failures = [child.communicate()[1].decode()[-2000:] for child in children if child.wait() != 0]
    assert not failures, failures[0]


# Run in a fresh process, as in a Ray actor: threads that an earlier test's runtime (given every core, so allowed to
# pin) left in the test process would otherwise be sampled too.
_AFFINITIES_WHILE_EMBEDDING = """
import json, os, sys, threading, time
from pathlib import Path
import numpy as np
from encoders.runtimes import OpenVinoRuntime

runtime = OpenVinoRuntime(Path(sys.argv[1]), 1, bf16=False)  # pinning is the same for both precisions
ids = np.full((64, 32), 2000, np.int64)
features = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
runs, done, held = 0, threading.Event(), set()

def embed():
    global runs
    while not done.is_set():
        runtime.run_many([features])
        runs += 1

worker = threading.Thread(target=embed)
worker.start()
try:
    while runs < 5 and worker.is_alive():  # a runtime that raises ends the sampling, not the run
        for task in os.listdir("/proc/self/task"):
            try:
                held.add(tuple(sorted(os.sched_getaffinity(int(task)))))
            except OSError:  # the thread ended meanwhile
                pass
        time.sleep(0.005)
finally:
    done.set()
    worker.join()
print(json.dumps({"runs": runs, "held": sorted(held), "allowed": sorted(os.sched_getaffinity(0))}))
"""


@pytest.mark.skipif(process_cores() < 2, reason="needs two cores to tell a pinned thread from a free one")
def test_a_one_thread_openvino_runtime_pins_no_thread_to_a_core(tmp_path: Path, default_encoder: Encoder) -> None:
    """Ray's actors embed with one thread each. OpenVINO pinned every such process's inference thread to the first
    core, so two actors shared one core and ran at half speed each; sampled while embedding, no thread of a process
    running a one-thread runtime may be held to fewer cores than the process has (a runtime given every core may pin)."""
    if not available("openvino"):
        pytest.skip("openvino is not installed")
    shutil.copy(bundled_minilm_folder() / EXPORT_FOLDER / FLOAT_FILE, tmp_path / FLOAT_FILE)
    done = subprocess.run([sys.executable, "-c", _AFFINITIES_WHILE_EMBEDDING, str(tmp_path / FLOAT_FILE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    sampled = json.loads(done.stdout.strip().splitlines()[-1])
    assert sampled["runs"] >= 5, "the runtime stopped embedding"
    pinned = [cores for cores in sampled["held"] if cores != sampled["allowed"]]
    assert not pinned, f"threads held to {pinned} of {sampled['allowed']}"


def test_models_endpoint_shows_the_backend_and_its_checks(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    backend = models[DEFAULT_MODEL]["backend"]
    assert backend["backend"] in {r["backend"] for r in backend["reports"]}
    assert all({"min_cosine", "mean_cosine", "probe_docs_per_s", "passed", "precision"} <= set(r) for r in backend["reports"])


def test_thread_budget_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_ENCODER_THREADS", "3")
    assert inference_threads() == 3
    monkeypatch.delenv("TROVE_ENCODER_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray gives a one-core actor
    assert inference_threads() == 1


def test_job_eta_comes_from_its_own_rate() -> None:
    now = time.time()
    job = Job("j", "build", "c", "running", 0.25, 250, 1000, {}, None, None, now - 40, now - 30, None)
    assert job.eta_seconds(now) == pytest.approx(90.0)
    assert Job("j", "build", "c", "running", 0.0, 0, 1000, {}, None, None, now, now, None).eta_seconds(now) is None
    assert Job("j", "build", "c", "succeeded", 1.0, 1000, 1000, {}, None, None, now - 40, now - 30, now).to_json()["eta_seconds"] is None
