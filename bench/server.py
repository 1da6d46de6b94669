"""Real server child processes on 127.0.0.1 (`trove serve`, `chroma run`), for benchmarks of the HTTP edge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    """A running server: its base URL and process id (for its CPU time and RSS)."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (every thread) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def main_thread_cpu_seconds(self) -> float:
        """CPU so far of the main thread alone (a server's event loop); the rest of cpu_seconds is its other threads."""
        fields = Path(f"/proc/{self.pid}/task/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def serve(command: list[str], ready_path: str, env: dict[str, str], port: int, what: str, ready_timeout_s: float = 600.0) -> Iterator[Served]:
    """Start ``command`` (listening on ``port``), wait until ``ready_path`` answers 200, yield it, stop it."""
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    served = Served(f"http://127.0.0.1:{port}", server.pid)
    try:
        deadline = time.monotonic() + ready_timeout_s
        with httpx.Client(base_url=served.url, timeout=5) as http:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"{what} exited with {server.returncode} before it was ready")
                try:
                    if http.get(ready_path).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what} not ready after {ready_timeout_s:.0f}s")
                time.sleep(0.2)
        yield served
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def trove_process(data_dir: Path, ready_timeout_s: float = 600.0, settings: dict[str, str] | None = None, code: Path | None = None) -> Iterator[Served]:
    """`trove serve` on a free loopback port. ``settings``: extra TROVE_* variables; ``code``: serve the
    checkout at that path (its PYTHONPATH) instead of the installed one, to compare two versions."""
    port = free_port()
    trove = str(Path(sys.executable).parent / "trove")
    env = {**os.environ, "TROVE_DATA_DIR": str(data_dir), "TROVE_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", **(settings or {})}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    with serve([trove, "serve", "--host", "127.0.0.1", "--port", str(port)], "/readyz", env, port, "trove serve", ready_timeout_s) as served:
        yield served


@contextmanager
def trove_server(data_dir: Path, ready_timeout_s: float = 600.0, settings: dict[str, str] | None = None) -> Iterator[str]:
    """`trove serve` on a free loopback port; yields its base URL."""
    with trove_process(data_dir, ready_timeout_s, settings) as served:
        yield served.url


@contextmanager
def chroma_process(data_dir: Path, ready_timeout_s: float = 120.0) -> Iterator[Served]:
    """Chroma's own server (`chroma run`, from the chromadb package) on a free loopback port."""
    port = free_port()
    chroma = str(Path(sys.executable).parent / "chroma")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    command = [chroma, "run", "--path", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    with serve(command, "/api/v2/heartbeat", env, port, "chroma run", ready_timeout_s) as served:
        yield served
