"""Where a server's CPU goes: py-spy samples of a running process, summed into the stages of a query.

py-spy (the bench extra) records collapsed stacks; each busy sample is charged to the deepest frame that
matches a stage, so a FAISS call made from the coalescer counts as search, not as coalescing. Samples whose
innermost frame is a wait (locks, queues, the event loop's poll) are idle and left out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Deepest matching frame wins; the first matching rule names the stage.
STAGES: tuple[tuple[str, str], ...] = (
    ("event loop C code (I/O, HTTP parsing, and its waits)", r"^Runner\.run \("),
    ("search (FAISS, matrix product)", r"faiss/|View\.search|SealedSegment\.search|VectorIndex|matmul_search|exact_search"),
    ("store reads and hits", r"Collection\._hits|Store\.by_rows|Store\._stored"),
    ("relevance", r"[Cc]alibrator|relevance_details"),
    ("query vectors", r"query_vectors|_check_vector"),
    ("coalescing and thread hand-offs", r"coalescer\.py|concurrent/futures|anyio/|run_in_threadpool|to_thread"),
    ("response building and JSON", r"routers/query\.py|serialize_response|jsonable_encoder|JSONResponse\.render|orjson|model_dump"),
    ("request parsing and validation", r"request_body_to_args|_validate_request|QueryRequest|to_query|validate_python|validate_json|Request\.json|Request\.body|json/decoder|validation\.py"),
    ("middleware and dependencies", r"service/metrics\.py|service/limits\.py|service/errors\.py|service/deps\.py|prometheus_client|solve_dependencies"),
    ("HTTP and ASGI (uvicorn, Starlette, FastAPI, the event loop)", r"uvicorn/|starlette/|fastapi/|httptools|asyncio/|uvloop"),
)
IDLE = re.compile(r"Condition\.wait|Event\.wait|Queue\.get|_worker \(concurrent|select \(|epoll|Thread\.join|sleep|SimpleQueue")


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which(str(Path(sys.executable).parent / "py-spy"))


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (collapsed stacks); the caller waits on it."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy, or the 'bench' extra)")
    command = [binary, "record", "-p", str(pid), "-r", str(rate), "-d", str(max(1, round(seconds))), "-f", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def split(collapsed: Path) -> dict[str, float]:
    """Share of the busy samples per stage (sums to 1), from a py-spy collapsed-stack file."""
    stages: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or IDLE.search(frames[-1]):
            continue
        deepest = frames[-1:] if frames[-1].startswith("Runner.run (") else reversed(frames)
        stage = next((name for frame in deepest for name, pattern in STAGES if re.search(pattern, frame)), "other")
        stages[stage] += int(count)
    total = sum(stages.values()) or 1
    return {name: n / total for name, n in stages.most_common()}
