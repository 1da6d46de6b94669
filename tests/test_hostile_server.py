"""A real `trove serve` on 127.0.0.1 under a fuzzer: schemathesis over the live OpenAPI schema finds no
server error and no response the schema does not describe; a genuine 500 leaves the connection usable."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from service.client import TroveClient
from tests.conftest import ServerProcess

SCHEMATHESIS = str(Path(sys.executable).parent / "st")
# Bounds that keep the run near a minute on 2 cores: all phases (boundary values, random schema-valid and
# schema-breaking cases, stateful sequences along the schema's links), at most this many cases per operation
# and phase, and a budget for the whole run (fuzzing and stateful testing repeat until it is spent).
MAX_EXAMPLES = 30
BUDGET_S = 60
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"
VEC = [0.1, 0.2, 0.3, 0.4]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=60) as http:  # collections for the fuzzer's guesses to reach (stateful runs make their own)
        http.post("/v1/collections", json={"name": "docs"})
        http.put("/v1/collections/docs/points", json={"points": [{"id": 1, "text": "a note on cats", "payload": {"k": "v"}}, {"id": "two", "text": "a note on taxes"}]})
        http.post("/v1/collections", json={"name": "vecs", "dim": 4, "metric": "ip"})
        http.put("/v1/collections/vecs/points", json={"points": [{"id": 1, "vector": VEC}]})
    report = tmp_path / "schemathesis.json"
    run = subprocess.run(
        [
            SCHEMATHESIS, "run", f"{server.url}/openapi.json", "--checks", CHECKS, "--phases", "coverage,fuzzing,stateful",
            "--max-examples", str(MAX_EXAMPLES), "--max-time", str(BUDGET_S), "--seed", "13", "--workers", "1",
            "--request-timeout", "60", "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report),
        ],
        cwd=tmp_path,  # its caches go there, not into the checkout
        capture_output=True,
        text=True,
        timeout=BUDGET_S + 240,
    )
    result = json.loads(report.read_text())
    server_errors = sum(f["count"] for f in result["failures"] if f["code"] == "ST101")
    figures = {
        "operations": result["operations"]["tested"],
        "cases": result["test_cases"]["generated"],
        "server_errors": server_errors,
        "schema_violations": sum(f["count"] for f in result["failures"]) - server_errors,
    }
    print(f"\nschemathesis: {json.dumps(figures)}")
    failed = f"{json.dumps(figures)}\n{run.stdout[-6000:]}"
    assert result["operations"]["tested"] == result["operations"]["total"] and not result["errors"], failed
    assert figures["server_errors"] == 0 and figures["schema_violations"] == 0, failed


def _exchange(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an open keep-alive connection; the status and body of its answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return int(head.split(b" ")[1]), body


def test_a_genuine_500_keeps_the_connection_usable(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url) as http:
        http.post("/v1/collections", json={"name": "vecs", "dim": 4})
    # A damaged upgrade record on disk: reading it fails inside the server, through no fault of the request.
    record = tmp_path / "data" / "collections" / "vecs" / "upgrades" / ("a" * 32) / "upgrade.json"
    record.parent.mkdir(parents=True)
    record.write_text("{ damaged")
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        status, body = _exchange(sock, f"/v1/collections/vecs/upgrades/{'a' * 32}")
        assert status == 500 and json.loads(body)["error"] == {"code": "internal_error", "message": "internal error; see the server log", "details": {}}
        status, body = _exchange(sock, "/v1/collections/vecs")  # the same connection
        assert status == 200 and json.loads(body)["name"] == "vecs"


def test_the_client_reads_ids_a_url_cannot_carry(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    with TroveClient(server.url) as trove:
        trove.create_collection("vecs", dim=4)
        trove.upsert("vecs", [{"id": i, "vector": VEC} for i in ["a/b", "..", "x y?#", 7, "7"]])
        assert [p.id for p in trove.lookup("vecs", ["a/b", "..", "7", 7, "gone"]).points] == ["a/b", "..", "7", 7]
        assert trove.get_point("vecs", "x y?#").id == "x y?#" and trove.get_point("vecs", 7).id == 7
