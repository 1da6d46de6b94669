"""Model upgrades without backfill: fit a compatibility map on a re-embedded sample, report, promote, roll back.

An upgrade job re-embeds a seeded sample of the stored texts with the new model and fits a map between
the index's space (the stored vectors) and the new model's space:

- ``query_side``: new model -> index space. Promotion adds a model version whose chain is that map;
  the index is untouched, new queries and new points are mapped into it.
- ``reproject``: index space -> new model. Promotion maps every stored vector by one linear pass into
  a new store and index (no model inference), serves the new model natively, and appends the map to
  every earlier version's chain, so chains compose across upgrades (v1 -> v2 -> v3).

The map is one of encoders/transforms/compat.py's methods, or ``auto``: every method fitted and the one
with the best new->old score on the held-out points kept (the report lists what each scored).

The report compares, on held-out sample points, old queries on the old gallery, new queries through
the map, and the new model on its own: as agreement with the new model's exact top-10 and, with
labelled examples, as nDCG@10 and recall@10. The upgrade folder (``upgrades/<id>/``: the map and
``upgrade.json``) is written under a temporary name and renamed when complete, so an interrupted job
leaves nothing that can be promoted; collection.json stays the one record of what serves.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from encoders.base import Encoder
from encoders.errors import Conflict, InvalidInput, NotFound, Unsupported
from encoders.transforms.base import Transform
from encoders.transforms.chamfer import chamfer_scores
from encoders.transforms.compat import METHODS, CompatMap, make_compat
from index.backends.faiss_index import FaissMetric, exact_search
from index.config import ModelVersion
from index.ingest.points import Vectors, map_rows
from index.relevance.fit import Example
from index.storage import atomic

if TYPE_CHECKING:
    from index.collection import Collection

Mode = Literal["query_side", "reproject"]
Progress = Callable[[float, int, int], None]
UPGRADES = "upgrades"
K = 10
# Promotions and rollbacks run one at a time: each reads the config, decides, and switches.
_SWITCH_LOCK = threading.Lock()
QUERY_BLOCK = 1024  # queries scored against the gallery at once in evaluations
MIN_TEXTS = 20  # stored points with text an upgrade needs to fit its map on
# query_side maps are also fitted on short word spans of the sampled texts (fit_pairs); chosen on WordNet's tuning queries.
CROPS_PER_TEXT = 2
CROP_WORDS = 3
WORD = re.compile(r"[^\W\d_][\w'-]*")
Embed = Callable[[list[str]], np.ndarray]
AUTO_METHODS = tuple(METHODS)  # what method "auto" fits and measures on the held-out sample, keeping the best


# ---- fitting and measuring on arrays (the job and the benchmark share these) -----


def short_crops(texts: Sequence[str], seed: int) -> list[str]:
    """CROPS_PER_TEXT seeded spans of 1 to CROP_WORDS consecutive words from each text."""
    rng = np.random.default_rng(seed)
    crops = []
    for text in texts:
        words = WORD.findall(text)
        for _ in range(CROPS_PER_TEXT if words else 0):
            length = int(rng.integers(1, min(CROP_WORDS, len(words)) + 1))
            start = int(rng.integers(0, len(words) - length + 1))
            crops.append(" ".join(words[start : start + length]))
    return crops


def fit_pairs(mode: Mode, texts: Sequence[str], old: np.ndarray, new: np.ndarray, embed_old: Embed, embed_new: Embed, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The paired rows a map is fitted on: the sampled texts embedded by both models and, for query_side, short crops of them.

    A query_side map carries queries, often a word or two, into the index; fitted on stored texts alone it
    carries poorly to them. Crops of the same texts, embedded by both models as queries, teach it short
    inputs at little cost (WordNet, tuning queries: 36% -> 48% of the gap recovered). A reproject map carries
    stored texts, so it is fitted on them alone (crops cost it there).
    """
    if mode != "query_side":
        return old, new
    crops = short_crops(texts, seed)
    if not crops:
        return old, new
    return np.concatenate([old, embed_old(crops)]), np.concatenate([new, embed_new(crops)])


def fit_map(method: str, mode: Mode, old: np.ndarray, new: np.ndarray, old_model: str | None, new_model: str | None, seed: int = 0) -> CompatMap:
    """query_side maps the new model into the old (index) space; reproject maps the old space into the new model's."""
    if mode == "query_side":
        return make_compat(method, new_model, old_model, seed).fit_pair(new, old)
    return make_compat(method, old_model, new_model, seed).fit_pair(old, new)


def top_ids(queries: Vectors, gallery: Vectors, k: int, metric: FaissMetric, exclude_self: bool = False) -> np.ndarray:
    """Exact top-k gallery rows per query (token sets: by Chamfer); with ``exclude_self`` query i is gallery row i and never its own neighbour."""
    rows = np.arange(len(gallery))
    found = []
    for start in range(0, len(queries), QUERY_BLOCK):
        block = queries[start : start + QUERY_BLOCK]
        if isinstance(gallery, list):
            scores = chamfer_scores(list(block), gallery)
            if exclude_self:
                scores[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
            ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        else:
            assert isinstance(block, np.ndarray)
            _, ids = exact_search(gallery, rows, block, k + int(exclude_self), metric)
            if exclude_self:
                own = np.arange(start, start + len(ids))[:, None]
                ids = np.stack([row[row != me][:k] for row, me in zip(ids, own[:, 0], strict=True)])
        found.append(ids)
    return np.concatenate(found) if found else np.zeros((0, k), np.int64)


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each truth row's ids that the found row also holds."""
    return float(np.mean([np.isin(t, f).mean() for f, t in zip(found, truth, strict=True)])) if len(truth) else 0.0


def ndcg_recall(found: np.ndarray, relevant: Sequence[np.ndarray]) -> tuple[float, float]:
    """Binary-relevance nDCG@k and recall@k of ranked rows against relevant row sets."""
    k = found.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, recall = [], []
    for row, rel in zip(found, relevant, strict=True):
        hits = np.isin(row, rel)
        ndcg.append(float((hits * discounts).sum() / discounts[: min(len(rel), k)].sum()) if len(rel) else 0.0)
        recall.append(float(hits.sum() / min(len(rel), k)) if len(rel) else 0.0)
    return float(np.mean(ndcg)), float(np.mean(recall))


def compare(
    compat: CompatMap,
    mode: Mode,
    old_queries: Vectors,
    old_gallery: Vectors,
    new_queries: Vectors,
    new_gallery: Vectors,
    normalise: Callable[[np.ndarray], np.ndarray],
    metric: FaissMetric,
    exclude_self: bool = False,
    relevant: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Per setting (old_old, new_old: new queries through the map, new_new): neighbour recall against new_new, and nDCG/recall when labelled.
    Token sets (multi-vector collections) are mapped token by token and ranked by exact Chamfer."""
    if mode == "query_side":
        cross_q, cross_g = map_rows(lambda v: normalise(compat.encode_queries(v)), new_queries), old_gallery
    else:
        cross_q, cross_g = new_queries, map_rows(lambda v: normalise(compat.encode_docs(v)), old_gallery)
    found = {
        "old_old": top_ids(old_queries, old_gallery, K, metric, exclude_self),
        "new_old": top_ids(cross_q, cross_g, K, metric, exclude_self),
        "new_new": top_ids(new_queries, new_gallery, K, metric, exclude_self),
    }
    out: dict[str, dict[str, float]] = {"neighbour_recall": {name: neighbour_recall(ids, found["new_new"]) for name, ids in found.items()}}
    if relevant is not None:
        scored = {name: ndcg_recall(ids, relevant) for name, ids in found.items()}
        out["ndcg"] = {name: s[0] for name, s in scored.items()}
        out["recall"] = {name: s[1] for name, s in scored.items()}
    return out


def fraction_of_new(settings: dict[str, float]) -> float | None:
    """m_new_old / m_new_new: the share of a full re-embed's quality served the moment the upgrade is promoted."""
    return settings["new_old"] / settings["new_new"] if settings["new_new"] > 0 else None


def verdict(settings: dict[str, float]) -> tuple[bool, float | None]:
    """The compatibility criterion M(new->old, old) > M(old, old), and the share of the old-to-new gap recovered."""
    gap = settings["new_new"] - settings["old_old"]
    return settings["new_old"] > settings["old_old"], (settings["new_old"] - settings["old_old"]) / gap if gap > 0 else None


# ---- upgrade records ---------------------------------------------------------------


@dataclass(frozen=True)
class UpgradeOptions:
    model: str
    sample: int = 5000
    method: str = "orthogonal"
    mode: Mode = "query_side"
    holdout: float = 0.2
    examples: tuple[Example, ...] = ()
    seed: int = 0


def _folder(collection: Collection, upgrade_id: str) -> Path:
    return collection.root / UPGRADES / upgrade_id


def load_record(collection: Collection, upgrade_id: str) -> dict[str, Any]:
    path = _folder(collection, upgrade_id) / "upgrade.json"
    if not path.exists():
        raise NotFound(f"no upgrade {upgrade_id!r} in collection {collection.config.name!r}", code="upgrade_not_found", details={"id": upgrade_id})
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def _save_record(folder: Path, record: dict[str, Any]) -> None:
    atomic.write_json(folder / "upgrade.json", record)


def list_upgrades(collection: Collection) -> list[dict[str, Any]]:
    root = collection.root / UPGRADES
    folders = sorted(p for p in root.iterdir() if (p / "upgrade.json").exists()) if root.is_dir() else []
    return sorted((json.loads((p / "upgrade.json").read_text()) for p in folders), key=lambda r: r["created_at"])


# ---- the job -----------------------------------------------------------------------


def check_upgrade(collection: Collection, options: UpgradeOptions) -> None:
    """What an upgrade job would refuse, known before it runs: the route calls it before answering 202, the job again."""
    config = collection.config
    if config.multivector and options.mode == "reproject":
        raise Unsupported(
            "reproject upgrades are not available for multi-vector collections (their FDEs would need drawing anew in the new space); use mode 'query_side'",
            code="upgrade_unsupported",
        )
    check_codes_upgradable(collection)
    if collection.serving.encoder is None:
        raise InvalidInput("a vectors-only collection has no texts to re-embed; upgrades need a collection with a model", code="upgrade_needs_model")
    if options.model == config.serving_model.name:
        raise InvalidInput(f"{options.model!r} already serves collection {config.name!r}", code="same_model")
    if options.mode == "reproject":
        collection.check_reprojectable()
    # The subquery stops at MIN_TEXTS rows: whether there are enough needs no scan of the whole table.
    found = len(collection.store.rows_where("row IN (SELECT row FROM points WHERE text IS NOT NULL LIMIT ?)", [MIN_TEXTS]))
    if found < MIN_TEXTS:
        raise InvalidInput(
            f"an upgrade needs at least {MIN_TEXTS} stored points with text to fit on, found {found}",
            code="sample_too_small",
            details={"found": found, "needed": MIN_TEXTS},
        )


def check_codes_upgradable(collection: Collection) -> None:
    """Learned binary codes are trained on the serving model's vectors: new points mapped from another model would be
    binarized by a coder that never saw their distribution, and no compatible training (BEBR's) exists yet. Refused."""
    compression = collection.config.compression
    if compression is not None and compression.quantizer.learned:
        raise Conflict(
            f"collection {collection.config.name!r} is compressed with learned binary codes, which are fitted to its current model; "
            "upgrades of such collections are not supported yet: refit the compression with sign codes first",
            code="upgrade_learned_codes",
        )


def _sample_rows(collection: Collection, options: UpgradeOptions) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): a seeded sample of points with text, always holding the rows labelled examples name."""
    with_text = collection.store.rows_where("text IS NOT NULL", [])
    rng = np.random.default_rng(options.seed)
    labelled = _relevant_rows(collection, options.examples)
    others = rng.permutation(np.setdiff1d(with_text, labelled))[: max(options.sample - len(labelled), 0)]
    chosen = rng.permutation(np.concatenate([labelled, others]))
    n_held = max(10, int(round(options.holdout * len(chosen))))
    return np.sort(chosen[n_held:]), np.sort(chosen[:n_held])


def _relevant_rows(collection: Collection, examples: Sequence[Example]) -> np.ndarray:
    ids = {i for e in examples for i in e.relevant}
    return np.array(sorted(p.row for i in ids if (p := collection.store.get(i)) is not None and p.text is not None), dtype=np.int64)


def _points(collection: Collection, rows: np.ndarray) -> tuple[list[str], Vectors, list[Any]]:
    """Texts, index-space vectors (a multi-vector collection's token sets) and ids of the sampled rows."""
    stored = collection.store.by_rows(rows.tolist(), with_vector=True)
    points = [stored[int(r)] for r in rows]
    return [str(p.text) for p in points], collection.inputs.stored_vectors(collection.store, points), [p.id for p in points]


def check_encoder(collection: Collection, encoder: Encoder) -> None:
    if collection.config.multivector and "multivector" not in encoder.info.kinds:
        raise InvalidInput(f"model {encoder.info.name!r} gives no token vectors", code="model_not_multivector", details={"model": encoder.info.name})


def _joined(first: Vectors, second: Vectors) -> Vectors:
    return [*first, *second] if isinstance(first, list) and isinstance(second, list) else np.concatenate([first, second])


def _with_text(collection: Collection) -> int:
    """Points a full re-embed (a backfill) would embed: those with stored text."""
    return len(collection.store.rows_where("text IS NOT NULL", []))


def run_upgrade(collection: Collection, encoder: Encoder, options: UpgradeOptions, upgrade_id: str, progress: Progress) -> dict[str, Any]:
    """The upgrade job: sample, re-embed, fit, evaluate, save the upgrade folder; returns the compatibility report."""
    check_upgrade(collection, options)
    check_encoder(collection, encoder)
    serving = collection.serving
    config = collection.config
    old_encoder = serving.encoder
    assert old_encoder is not None  # check_upgrade refuses vectors-only collections
    inputs = collection.inputs

    def old_queries_of(texts: list[str]) -> Vectors:
        return inputs.into_index(inputs.model_vectors(old_encoder, texts, queries=True), serving)
    fit_rows, held_rows = _sample_rows(collection, options)
    fit_texts, fit_old, fit_ids = _points(collection, fit_rows)
    held_texts, held_old, held_ids = _points(collection, held_rows)
    total = len(fit_texts) + 2 * len(held_texts)
    progress(0.0, 0, total)

    # The sample goes through the encoder's one path, the one a backfill or a write takes, so its rate
    # (on a seeded random sample of the stored texts, hence of their lengths) is what a re-embed would see.
    # One call for the whole sample, so it is sorted and batched as one.
    encode_started = time.perf_counter()
    sampled = inputs.model_vectors(encoder, fit_texts + held_texts, on_done=lambda n: progress(0.8 * n / total, n, total))
    sample_rate = len(sampled) / max(time.perf_counter() - encode_started, 1e-9)
    fit_new, held_new = sampled[: len(fit_texts)], sampled[len(fit_texts) :]
    new_queries = inputs.model_vectors(encoder, held_texts, queries=True)
    old_queries = old_queries_of(held_texts)
    progress(0.9, total, total)

    # Multi-vector collections fit on each token set's mean (TokenInputs.pooled) and map every token by it.
    pair_old, pair_new = fit_pairs(
        options.mode,
        fit_texts,
        inputs.pooled(fit_old),
        inputs.pooled(fit_new),
        lambda t: inputs.pooled(old_queries_of(t)),
        lambda t: inputs.pooled(inputs.model_vectors(encoder, t, queries=True)),
        options.seed,
    )
    metric: FaissMetric = "l2" if config.metric == "l2" else "ip"
    deciding = "ndcg" if options.examples else "neighbour_recall"
    labelled_inputs = None
    if options.examples:
        # Labelled queries search the whole sample, which holds every relevant point. Under reproject the
        # fit part of that gallery was seen by the fit, so these figures lean optimistic there.
        position = {pid: i for i, pid in enumerate(fit_ids + held_ids)}
        texts = [e.query for e in options.examples]
        labelled_inputs = (
            old_queries_of(texts),
            _joined(fit_old, held_old),
            inputs.model_vectors(encoder, texts, queries=True),
            _joined(fit_new, held_new),
            [np.array([position[i] for i in e.relevant if i in position], dtype=np.int64) for e in options.examples],
        )

    def measure(compat: CompatMap) -> dict[str, dict[str, float]]:
        measured = compare(compat, options.mode, old_queries, held_old, new_queries, held_new, inputs.normalise, metric, exclude_self=True)
        if labelled_inputs is not None:
            q_old, g_old, q_new, g_new, relevant = labelled_inputs
            labelled = compare(compat, options.mode, q_old, g_old, q_new, g_new, inputs.normalise, metric, relevant=relevant)
            measured |= {"ndcg": labelled["ndcg"], "recall": labelled["recall"]}
        return measured

    tried: dict[str, dict[str, Any]] = {}
    best: tuple[str, CompatMap, dict[str, dict[str, float]], float] | None = None
    for method in AUTO_METHODS if options.method == "auto" else (options.method,):
        fit_started = time.perf_counter()
        compat = fit_map(method, options.mode, pair_old, pair_new, config.serving_model.name, options.model, options.seed)
        fit_s = time.perf_counter() - fit_started
        measured = measure(compat)
        tried[method] = {"m_new_old": measured[deciding]["new_old"], "fit_seconds": fit_s}
        if best is None or measured[deciding]["new_old"] > best[2][deciding]["new_old"]:
            best = (method, compat, measured, fit_s)
    assert best is not None
    chosen, compat, measured, fit_s = best
    holds, recovered = verdict(measured[deciding])
    reembed_s = _with_text(collection) / sample_rate
    report: dict[str, Any] = {
        "upgrade_id": upgrade_id,
        "model": options.model,
        "method": chosen,
        "requested_method": options.method,
        "mode": options.mode,
        "from_version": config.serving_version,
        "m_old_old": measured[deciding]["old_old"],
        "m_new_old": measured[deciding]["new_old"],
        "m_new_new": measured[deciding]["new_new"],
        "criterion_metric": "ndcg@10" if options.examples else "neighbour_recall@10",
        "criterion_holds": holds,
        "gap_recovered": recovered,
        "fraction_of_new": fraction_of_new(measured[deciding]),
        "metrics": measured,
        "sample": {"fit": len(fit_texts), "fit_pairs": len(pair_old), "held_out": len(held_texts), "labelled_queries": len(options.examples), "seed": options.seed},
        "fit_seconds": fit_s,
        "reembed_estimate_seconds": reembed_s,
        # A backfill re-embeds every point with text through the write path: at least the re-embed's time.
        "backfill_estimate_seconds": reembed_s,
        "sample_docs_per_second": sample_rate,
    }
    if options.method == "auto":
        # Chosen on the held-out rows the report measures: the winner's figures lean slightly optimistic.
        report["auto"] = {"tried": tried, "chosen_by": f"{report['criterion_metric']} new->old on the held-out sample"}
    record = {
        "id": upgrade_id,
        "state": "fitted",
        "model": options.model,
        "model_dim": encoder.info.dim,
        "method": chosen,
        "mode": options.mode,
        "from_version": config.serving_version,
        "space": config.store_file,
        "version": None,
        "created_at": time.time(),
        "report": report,
    }
    _write_folder(collection, upgrade_id, compat, record)
    return report


def _write_folder(collection: Collection, upgrade_id: str, compat: Transform, record: dict[str, Any]) -> None:
    folder = _folder(collection, upgrade_id)
    staging = atomic.new_temp_dir(folder.parent, upgrade_id)
    compat.save(staging / "map")
    _save_record(staging, record)
    atomic.publish_dir(staging, folder)


# ---- promote and roll back ---------------------------------------------------------


def promote(collection: Collection, upgrade_id: str, force: bool, progress: Progress = lambda *_: None) -> dict[str, Any]:
    """Serve the upgrade's model. query_side: one atomic config switch; reproject: the stored vectors are mapped first."""
    with _SWITCH_LOCK:
        return _promote(collection, upgrade_id, force, progress)


def _promote(collection: Collection, upgrade_id: str, force: bool, progress: Progress) -> dict[str, Any]:
    record = load_record(collection, upgrade_id)
    config = collection.config
    if record["version"] is not None and any(m.version == record["version"] for m in config.models):
        check_servable(collection, record["version"])
        collection.switch_config(replace(config, serving_version=record["version"]))  # promoted before, then rolled back
        return mark(collection, record, "promoted", previous_version=config.serving_version)
    check_promotable(collection, record, force)
    version = max(m.version for m in config.models) + 1
    map_folder = f"{UPGRADES}/{upgrade_id}/map"
    if record["mode"] == "query_side":
        added = ModelVersion(version=version, name=record["model"], dim=record["model_dim"], chain=(map_folder,))
        collection.switch_config(replace(config, models=(*config.models, added), serving_version=version))
    else:
        compat = Transform.load(collection.root / map_folder)
        models = tuple(replace(m, chain=(*m.chain, map_folder)) for m in config.models)
        added = ModelVersion(version=version, name=record["model"], dim=record["model_dim"])
        new_config = replace(
            config, dim=record["model_dim"], models=(*models, added), serving_version=version, store_file=f"store-{upgrade_id}.sqlite"
        )
        collection.reproject(new_config, compat.encode_docs, progress)
    return mark(collection, {**record, "version": version}, "promoted", previous_version=config.serving_version)


def check_promotable(collection: Collection, record: dict[str, Any], force: bool) -> None:
    """Refuse an upgrade fitted for an index space that has since changed, or one failing the criterion without force."""
    if record["state"] == "promoted" and collection.config.serving_version == record["version"]:
        raise Conflict(f"upgrade {record['id']} already serves", code="already_promoted")
    if record["version"] is None and record["space"] != collection.config.store_file:
        raise Conflict("the collection was reprojected after this upgrade was fitted; run the upgrade again", code="stale_upgrade")
    if record["version"] is None and record["mode"] == "reproject":
        collection.check_reprojectable()  # compression may have been configured since the fit
    if record["version"] is None:
        check_codes_upgradable(collection)
    if not record["report"]["criterion_holds"] and not force:
        raise Conflict(
            f"the compatibility criterion fails ({record['report']['criterion_metric']}: new->old {record['report']['m_new_old']:.3f} "
            f"<= old/old {record['report']['m_old_old']:.3f}); promote with {{\"force\": true}} to serve it anyway",
            code="criterion_failed",
            details={k: record["report"][k] for k in ("m_old_old", "m_new_old", "m_new_new")},
        )


def check_servable(collection: Collection, version: int) -> None:
    """Refuse serving a version that a native rebuild retired (index/models/rebuild.py): nothing maps it into the index."""
    if collection.config.model(version).retired:
        raise Conflict(
            f"model version {version} cannot serve any more: the index was rebuilt in model version {collection.config.serving_version}'s own space, "
            "and no map takes the older version's vectors there",
            code="version_retired",
            details={"version": version},
        )


def rollback(collection: Collection, upgrade_id: str) -> dict[str, Any]:
    """Serve the version that served before this upgrade's promotion (a reprojected index stays; that version maps into it)."""
    with _SWITCH_LOCK:
        record = load_record(collection, upgrade_id)
        if "previous_version" in record:
            check_servable(collection, record["previous_version"])
        if record["state"] != "promoted" or collection.config.serving_version != record["version"]:
            raise Conflict(f"upgrade {upgrade_id} is not the serving version, so there is nothing to roll back", code="not_serving", details={"state": record["state"]})
        collection.switch_config(replace(collection.config, serving_version=record["previous_version"]))
        return mark(collection, record, "rolled_back")


def mark(collection: Collection, record: dict[str, Any], state: str, **fields: Any) -> dict[str, Any]:
    updated = {**record, **fields, "state": state, f"{state}_at": time.time()}
    _save_record(_folder(collection, record["id"]), updated)
    return updated
