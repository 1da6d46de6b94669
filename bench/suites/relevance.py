"""The `relevance` suite: calibrators and cuts on two WordNet query sets, chosen on validation, measured on test.

Query sets: lemmas -> the glosses of their synsets, and usage examples (the quoted sentences of a gloss) ->
their synset's definition. Candidates are each query's exact top-100 by inner product (what a flat
collection returns). The tuning split trains (80%) and validates (20%: early stopping, the adapter
variant, the operating point); every figure in the tables comes from the held-out test split.

A cut keeps, of each query's top k, what reaches one global threshold. "At equal mean list length"
sweeps each method's own knob on test to the same mean length (a comparison of curves); the default
operating point is the one a fit picks on validation.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
import typer

from bench import report
from bench.suites import Suite
from bench.suites.options import (
    DEFAULT_OUT,
    DEFAULT_THREADS,
    Docs,
    Out,
    Queries,
    Threads,
)

QUERY_SETS = {
    "lemmas": "WordNet lemma -> the glosses of its synsets",
    "examples": "WordNet usage example (sentence) -> its synset's definition",
}
# Adapter variants the study fits: what the query-dependent map sees, and what it trains on. (The first 10k synsets'
# run also fitted embedding+profile and embedding+profile+gaps: the gaps helped, the length was neutral.)
VARIANTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("embedding", "profile", "gaps", "length"), "pointwise"),
    (("profile", "gaps", "length"), "pointwise"),
    (("embedding", "profile", "gaps", "length"), "pairwise"),
    (("embedding", "profile", "gaps", "length"), "listwise"),
)
CALIBRATORS = ("identity", "platt", "isotonic", "cosine_adapter")
BETAS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0)
TABLE_K = 10
LENGTHS = (1.0, 2.0, 3.0, 5.0)
SHAPE_DEPTH = 30  # candidates per training query the score-shape probe's trees learn from
RECALLS = (0.8, 0.9, 0.95)


def _candidates(dataset: Any, queries: Any) -> Any:
    from index.relevance.calibrators import PROFILE_DEPTH, Candidates, query_words

    truth = dataset.truth(queries)
    ids, scores = truth.ids[:, :PROFILE_DEPTH], truth.scores[:, :PROFILE_DEPTH].astype(np.float32)
    labels = np.stack([np.isin(row, relevant) for row, relevant in zip(ids, queries.relevant, strict=True)])
    return Candidates(query_vectors=queries.vectors, scores=scores, labels=labels, words=query_words(queries.texts))


def _variant_name(features: tuple[str, ...], loss: str) -> str:
    return "+".join(features) + f" / {loss}"


def _study(train: Any, validation: Any, test: Any, seed: int) -> tuple[list[dict[str, Any]], list[Any], float]:
    """Fit every adapter variant: the study's rows, the fitted adapters (the report keeps the best on validation PR-AUC) and the seconds they took."""
    from index.relevance.calibrators import CosineAdapter
    from index.relevance.fit import pr_auc

    rows, adapters = [], []
    started = time.perf_counter()
    for features, loss in VARIANTS:
        typer.echo(f"  adapter {_variant_name(features, loss)}", err=True)
        adapter = CosineAdapter(features=features, loss=loss, seed=seed).fit(train, validation)
        adapters.append(adapter)
        rows.append(
            {
                "features": list(features),
                "loss": loss,
                "validation_pr_auc": pr_auc(adapter.of(validation), validation.labels, validation.mask),
                "test_pr_auc": pr_auc(adapter.of(test), test.labels, test.mask),
                "epochs": adapter.epochs_trained,
            }
        )
    max(rows, key=lambda r: r["validation_pr_auc"])["chosen"] = True
    return rows, adapters, time.perf_counter() - started


def _shape_rows(c: Any, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One row per (query, candidate) of the top ``depth``: the score, ln(rank), and the query's profile, gaps and length."""
    from index.relevance.calibrators import length_features, rank_gaps, score_profile

    query = np.concatenate([score_profile(c.scores), rank_gaps(c.scores), length_features(c.query_words)], axis=1)
    scores = np.nan_to_num(c.scores[:, :depth], nan=-1.0)
    log_rank = np.broadcast_to(np.log(np.arange(1, scores.shape[1] + 1)), scores.shape)
    return np.concatenate([scores.reshape(-1, 1), log_rank.reshape(-1, 1), np.repeat(query, scores.shape[1], axis=0)], axis=1), c.labels[:, :depth].reshape(-1)


def _shape_ceiling(train: Any, validation: Any, test: Any, seed: int) -> dict[str, Any]:
    """How much the score shape can tell at all: gradient-boosted trees on the adapter's score-shape features, rising in
    the score and falling in the rank (so monotone per query, like the adapter), early-stopped on validation.
    Trains on each query's top SHAPE_DEPTH (the trees' cost); scored, like every row, on the top 100."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from index.relevance.fit import pr_auc

    x, y = _shape_rows(train, SHAPE_DEPTH)
    x_val, y_val = _shape_rows(validation, SHAPE_DEPTH)
    model = HistGradientBoostingClassifier(
        max_iter=500, learning_rate=0.05, monotonic_cst=[1, -1] + [0] * (x.shape[1] - 2), early_stopping=True, random_state=seed
    ).fit(x, y, X_val=x_val, y_val=y_val)

    def probs(c: Any) -> np.ndarray:
        p = model.predict_proba(_shape_rows(c)[0])[:, 1].reshape(c.scores.shape)
        return np.where(c.mask, p, np.nan)

    return {
        "validation_pr_auc": pr_auc(probs(validation), validation.labels, validation.mask),
        "test_pr_auc": pr_auc(probs(test), test.labels, test.mask),
        "iterations": int(model.n_iter_),
    }


def _tables(adapter_probs: np.ndarray, test: Any, default: dict[str, Any]) -> dict[str, Any]:
    """At equal mean list length: recall kept; at equal recall kept: mean list length (test, top TABLE_K)."""
    from index.relevance.fit import autocut
    from index.relevance.operating import cut_curve, top_k_curve

    curves = {
        "cosine_adapter": cut_curve(adapter_probs, test.labels, test.mask, TABLE_K),
        "raw_cosine": cut_curve(test.scores, test.labels, test.mask, TABLE_K),
        "top_k": top_k_curve(test.labels, test.mask, TABLE_K),
    }
    auto = autocut(test.scores[:, :TABLE_K], test.mask[:, :TABLE_K])
    positives = (test.labels & test.mask)[:, :TABLE_K]
    autocut_row = {"mean_list_length": float(auto.sum() / len(auto)), "recall_kept": float((auto & positives).sum() / max(positives.sum(), 1))}
    lengths = sorted({*LENGTHS, round(default["mean_list_length"], 2), round(autocut_row["mean_list_length"], 2)})
    return {
        "k": TABLE_K,
        "autocut": autocut_row,
        "equal_length": [{"mean_list_length": length, **{name: c.recall_at_length(length) for name, c in curves.items()}} for length in lengths],
        "equal_recall": [{"recall_kept": r, **{name: c.length_at_recall(r) for name, c in curves.items()}} for r in RECALLS],
    }


def _query_set(kind: str, docs: int | None, queries: int, seed: int) -> dict[str, Any]:
    from bench.datasets import real_dataset, wordnet_source
    from index.relevance.calibrators import CosineAdapter
    from index.relevance.fit import (
        FitOptions,
        fit_on_splits,
        report_on_splits,
        threshold_for,
    )
    from index.relevance.operating import list_report

    dataset = real_dataset(wordnet_source(limit=docs, queries=kind), docs, queries)
    tune, test = _candidates(dataset, dataset.tune), _candidates(dataset, dataset.test)
    order = np.random.default_rng(seed).permutation(len(tune.scores))
    n_val = len(order) // 5
    train, validation = tune.subset(order[n_val:]), tune.subset(order[:n_val])

    typer.echo(f"{kind}: study", err=True)
    study, adapters, study_seconds = _study(train, validation, test, seed)
    typer.echo(f"{kind}: score-shape probe", err=True)
    shape_ceiling = _shape_ceiling(train, validation, test, seed)
    rows: dict[str, dict[str, Any]] = {}
    reports: dict[str, Any] = {}
    calibrator: Any = None
    for name in CALIBRATORS:
        typer.echo(f"{kind}: fitting {name}", err=True)
        options = FitOptions(calibrator=name, seed=seed)
        if name == CosineAdapter.name:  # the study's adapters, not fitted again: the report keeps the best on validation
            calibrator, reports[name] = report_on_splits(adapters, train, validation, test, options, study_seconds)
        else:
            reports[name] = fit_on_splits(train, validation, test, options)[1]
        rows[name] = {k: reports[name][k] for k in ("pr_auc", "p_at_r95", "threshold", "precision", "recall", "filtered_fraction", "empty_result_rate", "ece")}
    assert isinstance(calibrator, CosineAdapter)
    rows["top_k"] = reports["cosine_adapter"]["baselines"]["top_k"]
    rows["autocut"] = reports["cosine_adapter"]["baselines"]["autocut"]

    betas = []
    validation_probs, test_probs = calibrator.of(validation), calibrator.of(test)
    for beta in BETAS:  # the operating point each beta picks on validation, measured on test
        threshold = threshold_for(validation_probs, validation.labels, validation.mask, FitOptions(beta=beta))
        on_validation = list_report(validation_probs, validation.scores, validation.labels, validation.mask, threshold, TABLE_K)
        betas.append(
            {
                "beta": beta,
                "threshold": threshold,
                "validation": {k: on_validation[k] for k in ("mean_list_length", "recall_kept")},
                **list_report(test_probs, test.scores, test.labels, test.mask, threshold, TABLE_K),
            }
        )

    default = reports["cosine_adapter"]["operating_point"]
    at_k = default["lists"][str(TABLE_K)]
    raw_auc = rows["identity"]["pr_auc"]
    return {
        "query_set": QUERY_SETS[kind],
        "dataset": dataset.label,
        "queries": {"train": len(train.scores), "validation": len(validation.scores), "test": len(test.scores)},
        "relevant_in_top_100_per_query": float((test.labels & test.mask).sum() / len(test.scores)),
        "study": study,
        "shape_ceiling": shape_ceiling,
        "adapter": {"features": list(calibrator.features), "loss": calibrator.loss},
        "rows": rows,
        "operating_point": default,
        "betas": betas,
        "tables": _tables(test_probs, test, at_k),
        "adapter_pr_auc_ratio_to_raw": rows["cosine_adapter"]["pr_auc"] / raw_auc if raw_auc else None,
        "goals": {
            "lists_30pct_shorter_than_top_k_with_recall_0.9": bool(at_k["mean_list_length"] <= 0.7 * at_k["full_list_length"] and at_k["recall_kept"] >= 0.9),
            "adapter_keeps_10pct_more_than_raw_cut_of_same_length": bool((at_k["relevant_kept_vs_raw"] or 0) >= 1.1),
            "pr_auc_at_least_2.5x_raw": bool(raw_auc and rows["cosine_adapter"]["pr_auc"] >= 2.5 * raw_auc),
        },
    }


def relevance(
    docs: Docs = None,
    queries: Queries = 30_000,
    sets: Annotated[str, typer.Option(help="Comma-separated query sets: lemmas, examples.")] = "lemmas,examples",
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split and the adapter.")] = 0,
    threads: Threads = DEFAULT_THREADS,
    out: Out = DEFAULT_OUT,
) -> None:
    """Relevance filtering on WordNet lemma and sentence queries: the adapter study, operating points, equal-length and equal-recall cuts."""
    kinds = [k.strip() for k in sets.split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in QUERY_SETS]:
        raise typer.BadParameter(f"unknown query sets {unknown}; choose from {list(QUERY_SETS)}")
    import torch

    from index.relevance.operating import DEFAULT_BETA

    torch.set_num_threads(threads)
    payload = {**report.header("relevance"), "docs": docs, "default_beta": DEFAULT_BETA, "sets": {k: _query_set(k, docs, queries, seed) for k in kinds}}
    paths = report.write(out, "relevance", payload, render(payload))
    typer.echo(render(payload))
    typer.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


NAMES = {"identity": "raw cosine (threshold)", "platt": "global Platt", "isotonic": "isotonic", "cosine_adapter": "cosine adapter", "top_k": "top-k", "autocut": "autocut"}


def _render_set(kind: str, s: dict[str, Any]) -> list[str]:
    op = s["operating_point"]
    at_k, at_100 = op["lists"][str(TABLE_K)], op["lists"]["100"]
    t = s["tables"]
    lines = [
        f"## {s['query_set']}",
        "",
        f"Data: {s['dataset']}; queries {s['queries']}; {s['relevant_in_top_100_per_query']:.2f} relevant items per test query in its top 100.",
        "",
        "Adapter study (fit on train; chosen on validation PR-AUC; test shown for reference):",
        "",
        "| features / loss | validation PR-AUC | test PR-AUC | epochs |",
        "|---|---|---|---|",
        *(
            f"| {_variant_name(tuple(r['features']), r['loss'])}{' (chosen)' if r.get('chosen') else ''} | {r['validation_pr_auc']:.4f} | {r['test_pr_auc']:.4f} | {r['epochs']} |"
            for r in s["study"]
        ),
        "",
        (
            f"Score-shape probe (not a calibrator): gradient-boosted trees on profile+gaps+length, rising in the score and falling in the rank, "
            f"reach validation PR-AUC {s['shape_ceiling']['validation_pr_auc']:.4f}, test {s['shape_ceiling']['test_pr_auc']:.4f} ({s['shape_ceiling']['iterations']} trees)."
        ),
        "",
        "Calibrators over each test query's top 100 (threshold: the default operating point):",
        "",
        "| method | PR-AUC | P@R95 | threshold | precision | recall | filtered | empty results | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in s["rows"].items():
        threshold = f"k={row['k']}" if "k" in row else _f(row.get("threshold"), 4)
        cells = [_f(row.get(c), 4) for c in ("pr_auc", "p_at_r95")] + [threshold] + [_f(row.get(c), 4) for c in ("precision", "recall", "filtered_fraction", "empty_result_rate", "ece")]
        lines.append(f"| {NAMES[key]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Default operating point ({op['rule']}, on each validation query's top {op['k']}): min_relevance {op['threshold']:.4f}.",
        (
            f"On test, top {TABLE_K}: mean list length {at_k['mean_list_length']:.2f} of {at_k['full_list_length']:.2f}, recall kept {at_k['recall_kept']:.3f}, "
            f"precision {at_k['precision']:.3f}; a raw min_score cut of the same mean length ({_f(at_k['raw_cut']['min_score'], 4)}) keeps {at_k['raw_cut']['recall_kept']:.3f} "
            f"at precision {at_k['raw_cut']['precision']:.3f} (gain {at_k['precision_gain']:+.3f}, relevant kept {_f(at_k['relevant_kept_vs_raw'], 2)}x); top-j lists of that length keep {at_k['top_k_same_length_recall']:.3f}; "
            f"{at_k['empty_lists']:.3f} of lists end empty."
        ),
        (
            f"On test, top 100: mean list length {at_100['mean_list_length']:.2f} of {at_100['full_list_length']:.2f}, recall kept {at_100['recall_kept']:.3f} "
            f"vs {at_100['raw_cut']['recall_kept']:.3f} for a raw cut of the same mean length (precision gain {at_100['precision_gain']:+.4f})."
        ),
        "",
        f"Operating point by beta (F-beta maximised on validation; test, top {TABLE_K}):",
        "",
        "| beta | min_relevance | validation: mean list length | validation: recall kept | test: mean list length | test: recall kept | test: precision | test: raw cut recall kept |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {b['beta']:g} | {b['threshold']:.4f} | {b['validation']['mean_list_length']:.2f} | {b['validation']['recall_kept']:.3f} | {b['mean_list_length']:.2f} | {b['recall_kept']:.3f} | {b['precision']:.3f} | {b['raw_cut']['recall_kept']:.3f} |"
            for b in s["betas"]
        ),
        "",
        f"At equal mean list length (test, top {TABLE_K}; each method's knob swept to that length): share of the top-{TABLE_K} lists' relevant items kept.",
        f"Autocut has no knob: it keeps {t['autocut']['recall_kept']:.3f} at mean length {t['autocut']['mean_list_length']:.2f}.",
        "",
        "| mean list length | cosine adapter | raw cosine cut | top-k | adapter / raw |",
        "|---|---|---|---|---|",
        *(
            f"| {r['mean_list_length']:.2f} | {r['cosine_adapter']:.3f} | {r['raw_cosine']:.3f} | {r['top_k']:.3f} | {_f(r['cosine_adapter'] / r['raw_cosine'] if r['raw_cosine'] else None, 2)}x |"
            for r in t["equal_length"]
        ),
        "",
        f"At equal recall kept (test, top {TABLE_K}): mean list length needed (autocut: {t['autocut']['mean_list_length']:.2f} at {t['autocut']['recall_kept']:.3f}).",
        "",
        "| recall kept | cosine adapter | raw cosine cut | top-k |",
        "|---|---|---|---|",
        *(f"| {r['recall_kept']:.2f} | {_f(r['cosine_adapter'], 2)} | {_f(r['raw_cosine'], 2)} | {_f(r['top_k'], 2)} |" for r in t["equal_recall"]),
        "",
        f"Adapter PR-AUC / raw cosine: {_f(s['adapter_pr_auc_ratio_to_raw'], 2)}x.",
        "Goals: " + "; ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in s["goals"].items()) + ".",
        "",
    ]
    return lines


def render(payload: dict[str, Any]) -> str:
    lines = ["# Relevance suite", "", report.machine_line(payload), f"Default beta: {payload['default_beta']:g}.", ""]
    for kind, s in payload["sets"].items():
        lines += _render_set(kind, s)
    return "\n".join(lines)


SUITE = Suite(name="relevance", summary="relevance filtering on WordNet lemma and sentence queries: adapter study, operating points, cuts", command=relevance)
