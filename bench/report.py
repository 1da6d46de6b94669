"""Where results go and what every results file carries: the command, the machine, the date."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VERSIONED = (
    "torch", "numpy", "faiss-cpu", "faiss-gpu-cu12", "hnswlib", "usearch", "scalable-vs", "pymilvus",
    "milvus-lite", "lancedb", "chromadb", "httpx", "uvicorn", "fastembed",
)


def command_line() -> str:
    """The command as a user would type it again."""
    if Path(sys.argv[0]).name == "trove":
        return shlex.join(["trove", *sys.argv[1:]])
    return shlex.join([Path(sys.executable).name, *sys.argv])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(pages * os.sysconf("SC_PAGE_SIZE") / 2**30, 1) if pages else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def header(suite: str) -> dict[str, Any]:
    return {"suite": suite, "command": command_line(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine()}


def machine_line(head: dict[str, Any]) -> str:
    m = head["machine"]
    return f"`{head['command']}` on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, {head['date']}."


def write(out_dir: Path, suite: str, payload: dict[str, Any], markdown: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{suite}.json", out_dir / f"{suite}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return [json_path, md_path]
