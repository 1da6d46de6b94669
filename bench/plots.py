"""PNG plots (matplotlib, no display): recall/speed Pareto curves and bytes per vector against recall."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = "osD^vP*Xh<>pd8"
# Fourteen colours no two of which are shades of one hue, so every system's line is told apart.
COLORS = (*plt.get_cmap("tab10").colors, "black", "olive", "navy", "teal")


@dataclass(frozen=True)
class Curve:
    system: str
    recall: list[float]  # recall@10 at each sweep point
    speed_batched: list[float]  # QPS as a ratio to the baseline
    speed_single: list[float]
    bytes_per_vector: float
    recall_single: list[float] | None = None  # where single-query points differ from the sweep's (None: the same)


def _style(i: int) -> dict[str, object]:
    return {"marker": MARKERS[i % len(MARKERS)], "color": COLORS[i % len(COLORS)], "markersize": 5, "linewidth": 1.4}


def pareto(path: Path, title: str, curves: list[Curve], baseline: str, target: float) -> Path:
    """Recall@10 against QPS (relative to the baseline), batched and single-query side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True)
    for ax, attr, mode in ((axes[0], "speed_batched", "batched (all queries per call)"), (axes[1], "speed_single", "single query per call")):
        for i, curve in enumerate(curves):
            recall = curve.recall_single if attr == "speed_single" and curve.recall_single is not None else curve.recall
            order = sorted(range(len(recall)), key=lambda j: recall[j])
            ax.plot([recall[j] for j in order], [getattr(curve, attr)[j] for j in order], label=curve.system, **_style(i))
        ax.axvline(target, color="grey", linestyle="--", linewidth=1)
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        chosen_only = attr == "speed_single" and any(c.recall_single is not None for c in curves)
        ax.set_xlabel("recall@10 (test queries, chosen setting)" if chosen_only else "recall@10 (tuning queries)")
        ax.set_ylabel(f"QPS / {baseline} QPS")
        ax.set_title(mode, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(path: Path, title: str, curves: list[Curve], target: float) -> Path:
    """Bytes per vector in RAM (one build per system) across the recall its sweep reaches."""
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for i, curve in enumerate(curves):
        xs = sorted(curve.recall)
        ax.plot(xs, [curve.bytes_per_vector] * len(xs), label=curve.system, **_style(i))
    ax.axvline(target, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 (tuning queries)")
    ax.set_ylabel("bytes per vector")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(
    path: Path,
    title: str,
    clients: list[int],
    qps: list[float],
    p50_ms: list[float],
    p99_ms: list[float],
    references: dict[str, float],
) -> Path:
    """QPS and latency against concurrent clients, with in-process throughputs as horizontal references."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    left.plot(clients, qps, label="HTTP (trove serve)", **_style(0))
    for i, (name, value) in enumerate(references.items(), start=1):
        left.axhline(value, linestyle="--", linewidth=1.2, color=_style(2 * i)["color"], label=name)
    left.set_yscale("log")
    left.set_ylabel("queries per second")
    left.set_title("throughput", fontsize=10)
    right.plot(clients, p50_ms, label="p50", **_style(2))
    right.plot(clients, p99_ms, label="p99", **_style(4))
    right.set_ylabel("latency (ms)")
    right.set_title("latency", fontsize=10)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recall_vs_candidates(path: Path, title: str, candidates: list[int], curves: dict[str, list[float]]) -> Path:
    """Recall@10 after an exact rerank against the number of candidates reranked, one line per candidate source."""
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for i, (name, recall) in enumerate(curves.items()):
        ax.plot(candidates, recall, label=name, **{**_style(i), "marker": None})
    for target in (0.9, 0.95):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    ax.axvline(200, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("candidates reranked by exact Chamfer")
    ax.set_ylabel("recall@10 (test queries)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
