"""Shared fixtures: the real bundled encoder, real stdlib text, real apps and real server processes."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suites compare vectors of one text embedded in different batches at 1e-4 or closer. bfloat16, the CPU
# default where the CPU has it (encoders/backend_choice.py), differs by up to 5e-4 a component between two
# batchings (cosine >= 0.9999), so they run on a float32 backend; tests/test_encoding.py tests the default.
os.environ.setdefault("TROVE_ENCODER_BACKEND", "openvino" if importlib.util.find_spec("openvino") else "torch")

from encoders.distill import distilled_minilm, distilled_name  # noqa: E402
from encoders.registry import ModelRegistry  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.corpus import stdlib_sentences  # noqa: E402

TROVE = str(Path(sys.executable).parent / "trove")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """A models dir holding MiniLM distilled to a 256-d static model: distilled once (minutes), then cached.

    The cache is TROVE_TEST_CACHE or .cache/tests in the repository (git-ignored).
    """
    cache = Path(os.environ.get("TROVE_TEST_CACHE") or Path(__file__).resolve().parent.parent / ".cache" / "tests")
    return distilled_minilm(cache / "models").parent


@pytest.fixture(scope="session")
def static_model(models_dir: Path) -> str:
    return distilled_name(256)


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return stdlib_sentences(3000)


@pytest.fixture(scope="module")
def doc_tokens(registry: ModelRegistry, sentences: list[str], request: pytest.FixtureRequest) -> list[np.ndarray]:
    """Token vectors of the first ``N_DOCS`` sentences, ``N_DOCS`` being the multi-vector test module's own."""
    return registry.get("minilm-l6").encode_tokens(sentences[: request.module.N_DOCS])


@pytest.fixture(scope="module")
def query_tokens(registry: ModelRegistry, request: pytest.FixtureRequest) -> list[np.ndarray]:
    """Token vectors of the test module's ``QUERIES``."""
    return registry.get("minilm-l6").encode_tokens(request.module.QUERIES)


@pytest.fixture(scope="session")
def sentence_vectors(registry: ModelRegistry, sentences: list[str]) -> np.ndarray:
    return registry.get("minilm-l6").encode_docs(sentences)


@pytest.fixture(scope="session")
def word_queries(registry: ModelRegistry, sentences: list[str]) -> np.ndarray:
    """Out-of-distribution queries: single words from the corpus vocabulary (seeded sample), embedded by MiniLM."""
    vocabulary = sorted({w.strip(".,:;()'\"`").lower() for s in sentences for w in s.split()})
    words = [w for w in vocabulary if w.isalpha() and 4 <= len(w) <= 12]
    picked = np.random.default_rng(0).choice(len(words), size=min(300, len(words)), replace=False)
    return registry.get("minilm-l6").encode_queries([words[i] for i in picked])


def wait_ready(client: httpx.Client | TestClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server did not become ready")


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """An in-process app over a fresh data dir; keyword arguments override settings. Jobs may read the
    test's files (tmp_path) unless build_source_dirs says otherwise."""
    opened: list[TestClient] = []

    def make(client_host: str = "127.0.0.1", **overrides: object) -> TestClient:
        settings = Settings(**{"data_dir": tmp_path / "data", "build_source_dirs": [tmp_path], **overrides})
        client = TestClient(create_app(settings), client=(client_host, 50000))
        client.__enter__()
        opened.append(client)
        wait_ready(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    # A stopped app sits in reference cycles (error tracebacks, threads), and with it its loaded encoder (~330 MB):
    # collected only when the cyclic GC next runs its oldest generation, which left a run of tests holding 5-12 GB.
    gc.collect()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def launch_server(log: Path, data_dir: Path, source_dir: Path, **env: str) -> ServerProcess:
    """Starts `trove serve` on 127.0.0.1 as a real process and waits until it is ready; jobs may read source_dir."""
    port = free_port()
    # PYTHONPATH: the server runs this checkout's code, also where the editable install points at another one.
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TROVE_DATA_DIR": str(data_dir),
        "TROVE_BUILD_SOURCE_DIRS": str(source_dir),
        **env,
    }
    with open(log, "wb") as out:
        process = subprocess.Popen([TROVE, "serve", "--host", "127.0.0.1", "--port", str(port)], env=environment, stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    with httpx.Client(base_url=server.url) as http:
        try:
            wait_ready(http)
        except TimeoutError:
            server.stop()
            raise TimeoutError(log.read_text()) from None
    return server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `trove serve` on 127.0.0.1 as a real process; extra env vars configure it (jobs may read tmp_path)."""
    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, **env: str) -> ServerProcess:
        server = launch_server(tmp_path / f"server-{len(started)}.log", data_dir or tmp_path / "data", tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
