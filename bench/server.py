"""A real `trove serve` child process on 127.0.0.1, for benchmarks that measure the HTTP edge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def trove_server(data_dir: Path, ready_timeout_s: float = 600.0, settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start `trove serve` on a free loopback port, wait for /readyz, yield its base URL, stop it.

    ``settings`` are extra TROVE_* environment variables for the server.
    """
    port = free_port()
    trove = str(Path(sys.executable).parent / "trove")
    env = {**os.environ, "TROVE_DATA_DIR": str(data_dir), "TROVE_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", **(settings or {})}
    server = subprocess.Popen([trove, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        with httpx.Client(base_url=base_url, timeout=5) as http:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"trove serve exited with {server.returncode} before it was ready")
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"trove serve not ready after {ready_timeout_s:.0f}s")
                time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
