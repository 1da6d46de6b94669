"""The `relevance` suite: calibrators and baselines on WordNet lemma queries, measured on held-out test queries only.

Candidates are each query's exact top-100 by inner product (what a flat collection returns); a candidate is
relevant when its synset holds the lemma. Calibrators train on the tuning split (80% train, 20% validation
for early stopping and the threshold) and every figure comes from the test split.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, Docs, Out, Queries, Source

CALIBRATORS = ("identity", "platt", "isotonic", "cosine_adapter")


def _candidates(dataset: Any, queries: Any) -> Any:
    from index.relevance.calibrators import PROFILE_DEPTH, Candidates

    truth = dataset.truth(queries)
    ids, scores = truth.ids[:, :PROFILE_DEPTH], truth.scores[:, :PROFILE_DEPTH].astype(np.float32)
    labels = np.stack([np.isin(row, relevant) for row, relevant in zip(ids, queries.relevant, strict=True)])
    return Candidates(query_vectors=queries.vectors, scores=scores, labels=labels)


def relevance(
    source: Source = "wordnet",
    docs: Docs = 20_000,
    queries: Queries = 3000,
    target_recall: Annotated[float, typer.Option(help="Recall the global threshold keeps on validation.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split and the adapter.")] = 0,
    out: Out = DEFAULT_OUT,
) -> None:
    """Relevance calibrators (identity, Platt, isotonic, cosine adapter) vs raw cosine, top-k and autocut."""
    from bench.datasets import load_source, real_dataset
    from index.relevance.fit import FitOptions, fit_on_splits

    head = report.header("relevance")
    dataset = real_dataset(load_source(source), docs, queries)
    if dataset.tune.relevant is None:
        raise typer.BadParameter(f"{source} has no relevant sets; the relevance suite needs labelled queries")
    tune, test = _candidates(dataset, dataset.tune), _candidates(dataset, dataset.test)
    order = np.random.default_rng(seed).permutation(len(tune.scores))
    n_val = len(order) // 5
    train, validation = tune.subset(order[n_val:]), tune.subset(order[:n_val])

    rows: dict[str, dict[str, Any]] = {}
    reports: dict[str, Any] = {}
    for name in CALIBRATORS:
        typer.echo(f"fitting {name}", err=True)
        _, fitted = fit_on_splits(train, validation, test, FitOptions(calibrator=name, target_recall=target_recall, seed=seed))
        reports[name] = fitted
        rows[name] = {k: fitted[k] for k in ("pr_auc", "p_at_r95", "threshold", "precision", "recall", "filtered_fraction", "empty_result_rate", "ece")}
    baselines = reports["cosine_adapter"]["baselines"]
    rows["top_k"], rows["autocut"] = baselines["top_k"], baselines["autocut"]
    raw = rows["identity"]["pr_auc"]
    adapter = rows["cosine_adapter"]
    payload = {
        **head,
        "dataset": dataset.label,
        "queries": {"train": len(train.scores), "validation": len(validation.scores), "test": len(test.scores)},
        "candidates_per_query": int(test.scores.shape[1]),
        "target_recall": target_recall,
        "rows": rows,
        "adapter_pr_auc_ratio_to_raw": adapter["pr_auc"] / raw if raw else None,
        "goals": {
            "adapter_pr_auc_at_least_1.25x_raw": bool(raw and adapter["pr_auc"] >= 1.25 * raw),
            "adapter_beats_every_baseline_on_pr_auc_and_p_at_r95": all(
                adapter["pr_auc"] > rows[b]["pr_auc"] and adapter["p_at_r95"] > rows[b]["p_at_r95"] for b in ("identity", "platt", "isotonic", "top_k")
            ),
        },
        "precision_gain_at_threshold": adapter["precision"] - rows["identity"]["precision"],
    }
    paths = report.write(out, "relevance", payload, render(payload))
    typer.echo(render(payload))
    typer.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:.4f}"  # precisions near the base rate differ in the fourth place


def render(payload: dict[str, Any]) -> str:
    names = {"identity": "raw cosine (threshold)", "platt": "global Platt", "isotonic": "isotonic", "cosine_adapter": "cosine adapter", "top_k": "top-k", "autocut": "autocut"}
    lines = [
        "# Relevance suite",
        "",
        report.machine_line(payload),
        f"Data: {payload['dataset']}; queries {payload['queries']} (test = held-out split), top-{payload['candidates_per_query']} exact candidates each.",
        f"Thresholds chosen on validation for recall {payload['target_recall']}; every figure below is on test queries.",
        "",
        "| method | PR-AUC | P@R95 | threshold | precision | recall | filtered | empty results | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in payload["rows"].items():
        threshold = f"k={row['k']}" if "k" in row else _cell(row, "threshold")
        cells = [_cell(row, k) for k in ("pr_auc", "p_at_r95")] + [threshold] + [_cell(row, k) for k in ("precision", "recall", "filtered_fraction", "empty_result_rate", "ece")]
        lines.append(f"| {names[key]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Cosine adapter PR-AUC / raw cosine: {payload['adapter_pr_auc_ratio_to_raw']:.2f}x (goal >= 1.25x): {'met' if payload['goals']['adapter_pr_auc_at_least_1.25x_raw'] else 'not met'}.",
        f"Adapter beats every baseline on PR-AUC and P@R95: {'yes' if payload['goals']['adapter_beats_every_baseline_on_pr_auc_and_p_at_r95'] else 'no'}.",
        f"Precision gain over a raw-cosine threshold at the same recall target: {payload['precision_gain_at_threshold']:+.4f}.",
    ]
    return "\n".join(lines)


SUITE = Suite(name="relevance", summary="relevance calibrators vs raw cosine, top-k and autocut on WordNet test queries", command=relevance)
