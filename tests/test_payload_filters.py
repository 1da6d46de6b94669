"""Payload filters and payload indexes on real SQLite and FAISS, against a brute-force reference in Python.

The reference below is written from the filter language's definition (index/query/filters.py), not from its
SQL: random payloads and random nested filters must select the same points with and without payload indexes,
before and after deletes, overwrites, seals and merges, with the per-segment mask cache warm throughout.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import InvalidInput
from encoders.registry import ModelRegistry
from index.backends.faiss_index import IndexSpec
from index.catalog import Catalog
from index.collection import Collection
from index.query.filters import Condition, Filter, IsEmpty, IsNull, Match, Range
from index.requests import PointInput, Query
from index.segments.policy import EngineSettings
from index.storage.payload_index import PayloadIndexSpec

DIM = 4
ENGINE = EngineSettings(seal_points=40, max_segment_points=400, merge_factor=3)
MISSING = object()

STRINGS = ["a", "b", "c", "2024-03-01"]
INTS = [-2, 0, 1, 2, 5]
FLOATS = [-1.0, 0.5, 1.0, 2.5]
DATETIMES = ["2024-03-01", "2024-03-01T12:00:00Z", "2024-03-01T13:30:00+02:00", "2024-02-28T23:59:59.5", "2025-01-01T00:00:00-05:00"]
# The typed keys (and the index each gets when the run indexes them), and one key of anything, never indexed.
TYPED = {"k": "keyword", "n": "integer", "f": "float", "b": "bool", "t": "datetime", "o.x": "integer"}
SCALARS = {"keyword": STRINGS, "integer": INTS, "float": FLOATS + INTS, "bool": [True, False], "datetime": DATETIMES}
ANY_SCALAR = st.sampled_from([*STRINGS, *INTS, *FLOATS, True, False, *DATETIMES])


# ---- the reference -----------------------------------------------------------------------------


def raw_value(payload: dict[str, Any] | None, key: str) -> Any:
    value: Any = payload
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def values_of(payload: dict[str, Any] | None, key: str) -> list[Any]:
    raw = raw_value(payload, key)
    items = raw if isinstance(raw, list) else [raw]
    return [v for v in items if v is not MISSING and v is not None and not isinstance(v, list | dict)]


def kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"


def reference_instant(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return None if parsed is None else parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def in_range(value: Any, condition: Range) -> bool:
    if condition.on_datetimes:
        subject, bounds = reference_instant(value), [(name, reference_instant(b)) for name, b in condition.bounds()]
    elif kind(value) == "number":
        subject, bounds = value, condition.bounds()
    else:
        return False
    if subject is None:
        return False
    tests = {"gt": lambda b: subject > b, "gte": lambda b: subject >= b, "lt": lambda b: subject < b, "lte": lambda b: subject <= b}
    return all(tests[name](bound) for name, bound in bounds)


def holds(condition: Condition, payload: dict[str, Any] | None) -> bool:
    if isinstance(condition, Filter):
        return (
            all(holds(c, payload) for c in condition.must)
            and (not condition.should or any(holds(c, payload) for c in condition.should))
            and not any(holds(c, payload) for c in condition.must_not)
        )
    if isinstance(condition, Match):
        return any(kind(v) == kind(w) and v == w for v in values_of(payload, condition.key) for w in condition.values)
    if isinstance(condition, Range):
        return any(in_range(v, condition) for v in values_of(payload, condition.key))
    raw = raw_value(payload, condition.key)
    if isinstance(condition, IsNull):
        return raw is None
    assert isinstance(condition, IsEmpty)
    return raw is MISSING or raw is None or (isinstance(raw, list) and all(v is None for v in raw))


# ---- strategies ----------------------------------------------------------------------------------


def typed_value(index_type: str) -> st.SearchStrategy[Any]:
    scalar = st.sampled_from(SCALARS[index_type])
    return st.one_of(st.none(), scalar, st.lists(st.one_of(scalar, st.none()), max_size=3))


ANYTHING = st.recursive(st.one_of(st.none(), ANY_SCALAR), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2), max_leaves=4)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    payload: dict[str, Any] = {}
    for key, index_type in TYPED.items():
        if key == "o.x" or not draw(st.booleans()):
            continue
        payload[key] = draw(typed_value(index_type))
    if draw(st.booleans()):  # o.x is integer-indexed in indexed runs; o itself may be anything else
        payload["o"] = draw(st.one_of(st.builds(lambda v: {"x": v}, typed_value("integer")), st.builds(lambda v: {"y": v}, ANYTHING), ANY_SCALAR, st.lists(ANY_SCALAR, max_size=2)))
    if draw(st.booleans()):
        payload["m"] = draw(ANYTHING)
    return payload


KEYS = st.sampled_from([*TYPED, "m", "absent"])
NUMBER = st.sampled_from(INTS + FLOATS)


@st.composite
def leaves(draw: st.DrawFn) -> Condition:
    key = draw(KEYS)
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return Match(key, tuple(draw(st.lists(ANY_SCALAR, min_size=1, max_size=3))))
    if choice == 1:
        bounds = draw(st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), st.sampled_from(DATETIMES) if key == "t" or draw(st.booleans()) and key == "m" else NUMBER, min_size=1, max_size=2))
        return Range(key, **bounds)
    if choice == 2:
        return Match(key, (draw(st.sampled_from(SCALARS.get(TYPED.get(key, "keyword"), STRINGS))),))
    return IsNull(key) if choice == 3 else IsEmpty(key)


filters = st.recursive(
    st.builds(lambda c: Filter(must=(c,)), leaves()),
    lambda inner: st.builds(
        Filter,
        must=st.lists(st.one_of(leaves(), inner), max_size=2).map(tuple),
        should=st.lists(st.one_of(leaves(), inner), max_size=2).map(tuple),
        must_not=st.lists(st.one_of(leaves(), inner), max_size=2).map(tuple),
    ),
    max_leaves=6,
)

Op = tuple[str, Any]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.lists(st.tuples(st.integers(0, 79), payloads()), min_size=1, max_size=25)),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 79), min_size=1, max_size=10)),
        st.tuples(st.just("optimize"), st.booleans()),
    ),
    min_size=1,
    max_size=5,
)


# ---- the properties -----------------------------------------------------------------------------


def _open(root: Path, index: str) -> tuple[Catalog, Collection]:
    catalog = Catalog(root, ModelRegistry(root / "models"), ENGINE)
    catalog.load_all()
    spec = IndexSpec("hnsw", m=8, ef_construction=40) if index == "hnsw" else IndexSpec("flat")
    return catalog, catalog.create("c", model=None, dim=DIM, metric="ip", index=spec)


def _check(collection: Collection, truth: dict[int, tuple[np.ndarray, dict[str, Any] | None]], checks: list[Filter], query: np.ndarray) -> None:
    for f in checks:
        expected = {i for i, (_, payload) in truth.items() if holds(f, payload)}
        hits = collection.query(Query(vector=query.tolist(), k=100, filter=f, with_payload=False))
        assert {int(h.id) for h in hits} == expected, f
        # The order is exact search's over the allowed points (flat; the HNSW runs return every allowed point too).
        ids = sorted(expected)
        if ids:
            scores = np.array([truth[i][0] @ query for i in ids])
            assert [h.score for h in hits] == pytest.approx(sorted(scores, reverse=True), abs=1e-4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    first=st.lists(st.tuples(st.integers(0, 79), payloads()), min_size=1, max_size=60),
    later=ops,
    checks=st.lists(filters, min_size=1, max_size=4),
    indexed=st.sampled_from(["none", "before", "after"]),
    index=st.sampled_from(["flat", "hnsw"]),
    seed=st.integers(0, 2**16),
)
def test_filters_select_what_the_reference_selects(
    tmp_path_factory: pytest.TempPathFactory, first: list[tuple[int, Any]], later: list[Op], checks: list[Filter], indexed: str, index: str, seed: int
) -> None:
    root = tmp_path_factory.mktemp("filters")
    catalog, collection = _open(root, index)
    rng = np.random.default_rng(seed)
    truth: dict[int, tuple[np.ndarray, dict[str, Any] | None]] = {}
    query = rng.standard_normal(DIM).astype(np.float32)

    def upsert(batch: list[tuple[int, Any]]) -> None:
        latest = dict(batch)  # a batch holds an id once
        points = [PointInput(id=i, vector=rng.standard_normal(DIM).astype(np.float32).tolist(), payload=p) for i, p in latest.items()]
        collection.upsert(points)
        truth.update({p.id: (np.asarray(p.vector, np.float32), p.payload) for p in points})

    def index_all() -> None:
        for key, index_type in TYPED.items():
            collection.indexes.build_payload(PayloadIndexSpec(key, index_type), lambda *a: None)  # type: ignore[arg-type]

    try:
        if indexed == "before":
            index_all()
        upsert(first)
        if indexed == "after":
            index_all()
        _check(collection, truth, checks, query)  # warms the mask cache
        for op, arg in later:
            if op == "upsert":
                upsert(arg)
            elif op == "delete":
                collection.delete(arg)
                for i in arg:
                    truth.pop(i, None)
            else:
                collection.optimize(seal=arg)
            _check(collection, truth, checks, query)
        assert {k for k, i in collection.store.ready_payload_indexes().items()} == (set(TYPED) if indexed != "none" else set())
    finally:
        catalog.close()


def test_indexed_conditions_read_the_index_and_the_rest_read_json(tmp_path: Path) -> None:
    catalog, collection = _open(tmp_path, "flat")
    collection.indexes.build_payload(PayloadIndexSpec("n", "integer"), lambda *a: None)
    indexes = collection.store.ready_payload_indexes()
    assert "payload_index_" in Filter((Match("n", (1, 2)),)).to_sql(indexes)[0]
    assert "payload_index_" in Filter((Range("n", gte=1.5),)).to_sql(indexes)[0]
    assert "payload_index_" in Filter((IsEmpty("n"),)).to_sql(indexes)[0]
    # A string can never equal an integer-indexed value: the JSON path answers it (nothing), never a TEXT-to-INTEGER cast.
    assert "json_each" in Filter((Match("n", ("1",)),)).to_sql(indexes)[0]
    assert "json_each" in Filter((Match("k", ("a",)),)).to_sql(indexes)[0]
    catalog.close()


def _points(payloads: list[dict[str, Any]], first: int = 0) -> list[PointInput]:
    return [PointInput(id=first + i, vector=[1.0, 0.0, 0.0, float(i)], payload=p) for i, p in enumerate(payloads)]


@pytest.mark.parametrize(
    ("index_type", "bad"),
    [("keyword", 5), ("integer", "5"), ("integer", 2.5), ("float", True), ("bool", 1), ("datetime", "yesterday"), ("keyword", {"nested": "x"}), ("keyword", ["a", ["b"]])],
)
def test_a_write_with_a_value_of_another_type_is_refused_whole(tmp_path: Path, index_type: str, bad: Any) -> None:
    catalog, collection = _open(tmp_path, "flat")
    collection.upsert(_points([{"v": SCALARS[index_type][0]}]))
    collection.indexes.build_payload(PayloadIndexSpec("v", index_type), lambda *a: None)  # type: ignore[arg-type]
    table = collection.store.payload_indexes["v"].table
    before = collection.store._conn().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    with pytest.raises(InvalidInput) as refused:
        collection.upsert(_points([{"v": SCALARS[index_type][0]}, {"v": bad}, {"v": None}], first=10))
    assert refused.value.code == "payload_type_mismatch"
    assert refused.value.details["key"] == "v" and refused.value.details["type"] == index_type and refused.value.details["id"] == 11
    assert collection.count() == 1 and collection.store._conn().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == before
    assert collection.query(Query(vector=[1.0, 0, 0, 0], k=10, filter=Filter((IsNull("v"),)))) == []
    # Nulls, missing keys and lists of the type are values an index takes.
    collection.upsert(_points([{"v": None}, {}, {"v": [SCALARS[index_type][0], None]}], first=20))
    assert collection.count() == 4
    catalog.close()


def test_an_index_over_points_of_another_type_fails_and_leaves_no_index(tmp_path: Path) -> None:
    catalog, collection = _open(tmp_path, "flat")
    collection.upsert(_points([{"v": i} for i in range(50)] + [{"v": "fifty"}]))
    with pytest.raises(InvalidInput) as refused:
        collection.indexes.build_payload(PayloadIndexSpec("v", "integer"), lambda *a: None)
    assert refused.value.code == "payload_type_mismatch" and refused.value.details["id"] == 50
    assert collection.store.payload_indexes == {}
    assert not collection.store._conn().execute("SELECT name FROM sqlite_master WHERE name GLOB 'payload_index_[0-9]*'").fetchall()
    collection.upsert(_points([{"v": "now a string"}], first=100))  # nothing enforces a type any more
    catalog.close()


def test_indexes_survive_a_reopen_and_keep_filtering(tmp_path: Path) -> None:
    catalog, collection = _open(tmp_path, "flat")
    collection.indexes.build_payload(PayloadIndexSpec("n", "integer"), lambda *a: None)
    collection.upsert(_points([{"n": i % 5} for i in range(30)]))
    catalog.close()
    again = Catalog(tmp_path, ModelRegistry(tmp_path / "models"), ENGINE)
    again.load_all()
    reopened = again.get("c")
    assert reopened.indexes.payload_info(with_counts=True) == [{"key": "n", "type": "integer", "state": "ready", "values": 30, "points": 30}]
    hits = reopened.query(Query(vector=[1.0, 0, 0, 0], k=100, filter=Filter((Range("n", gt=2),)), with_payload=True))
    assert sorted(int(h.id) for h in hits) == [i for i in range(30) if i % 5 > 2]
    with pytest.raises(InvalidInput):
        reopened.upsert(_points([{"n": "x"}], first=99))
    again.close()


def test_a_fill_while_writers_write_and_delete_ends_in_step(tmp_path: Path) -> None:
    """The index job runs chunk by chunk beside writers: afterwards the table holds exactly the live values."""
    catalog, collection = _open(tmp_path, "flat")
    collection.upsert(_points([{"n": i % 7} for i in range(3000)]))
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        i = 0
        try:
            while not stop.is_set():
                collection.upsert(_points([{"n": [i % 7, (i + 1) % 7]}], first=3000 + i % 500))
                collection.delete([i % 3000])
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        collection.store.create_payload_index(PayloadIndexSpec("n", "integer"))
        collection.store.fill_payload_index("n", lambda *a: None, chunk=100)
    finally:
        stop.set()
        writer.join()
    assert not errors
    conn = collection.store._conn()
    table = collection.store.payload_indexes["n"].table
    held = set(conn.execute(f"SELECT value, row FROM {table}").fetchall())
    expected = set(conn.execute("SELECT j.value, p.row FROM points p, json_each(p.payload, '$.n') j").fetchall())
    assert held == expected
    catalog.close()


def test_filtered_queries_beside_writes_and_merges_never_fail(tmp_path: Path) -> None:
    catalog, collection = _open(tmp_path, "hnsw")
    collection.indexes.build_payload(PayloadIndexSpec("n", "integer"), lambda *a: None)
    collection.upsert(_points([{"n": i % 10} for i in range(400)]))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        i = 0
        try:
            while not stop.is_set():
                collection.upsert(_points([{"n": i % 10}], first=i % 400))
                if i % 50 == 0:
                    collection.optimize()
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        for i in range(150):
            f = Filter(must=(Match("n", (i % 10,)),), must_not=(Range("n", gt=8),))
            hits = collection.query(Query(vector=[1.0, 0.0, 0.0, float(i % 7)], k=5, filter=f))
            assert all(h.payload is not None and h.payload["n"] == i % 10 for h in hits)
            assert (i % 10 == 9) == (hits == [])
    finally:
        stop.set()
        writer.join()
    assert not errors
    catalog.close()


@pytest.mark.parametrize(
    "make",
    [lambda: Match("a", ()), lambda: Range("a"), lambda: Range("a", gt="soon"), lambda: Range("a", gt=1, lt="2024-01-01"), lambda: Range("a", gt=True), lambda: IsNull("a..b")],
)
def test_bad_conditions_are_refused(make: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        make()
    assert refused.value.code == "invalid_filter"



def test_sealed_segments_masks_are_kept_and_deletes_still_apply(tmp_path: Path) -> None:
    catalog, collection = _open(tmp_path, "flat")
    collection.upsert(_points([{"n": i % 4} for i in range(200)]))
    collection.optimize(seal=True)
    f = Filter((Match("n", (1,)),))
    first = {int(h.id) for h in collection.query(Query(vector=[1.0, 0, 0, 0], k=200, filter=f))}
    misses = collection.filters.cache.misses
    collection.delete([1, 5])
    collection.upsert(_points([{"n": 1}], first=9))  # 9 had n=1: a new row, in the appendable segment
    again = {int(h.id) for h in collection.query(Query(vector=[1.0, 0, 0, 0], k=200, filter=f))}
    assert collection.filters.cache.misses == misses and collection.filters.cache.hits > 0  # sealed masks reused
    assert again == first - {1, 5} == {i for i in range(200) if i % 4 == 1} - {1, 5}
    catalog.close()
