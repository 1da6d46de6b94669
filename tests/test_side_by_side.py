"""Parts searched side by side only when it pays (index/segments/side_by_side.py): results always in order, each
part searched once; cheap parts in turn on the calling thread; costly ones across cores, one group per core."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.segments import side_by_side


class Part:
    """A stand-in searcher: only its identity matters (costs are kept per searcher)."""


@pytest.fixture(autouse=True)
def fresh_gain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(side_by_side, "_gain", side_by_side._Gain())


def _tasks(n: int, seconds: float, where: list[tuple[int, str]]) -> list:
    def task(i: int) -> int:
        if seconds:
            time.sleep(seconds)
        where.append((i, threading.current_thread().name))
        return i * 10

    return [lambda i=i: task(i) for i in range(n)]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 12), side=st.booleans(), exact=st.lists(st.booleans(), min_size=12, max_size=12))
def test_results_in_order_each_part_once(n: int, side: bool, exact: list[bool]) -> None:
    parts = [Part() for _ in range(n)]
    side_by_side._costs.update({p: {e: 1.0 if side else 0.0} for p, e in zip(parts, exact, strict=False)})
    where: list[tuple[int, str]] = []
    assert side_by_side.search_parts(_tasks(n, 0, where), parts, exact[:n]) == [i * 10 for i in range(n)]
    assert sorted(i for i, _ in where) == list(range(n))


def test_cheap_parts_are_searched_in_turn_on_the_calling_thread() -> None:
    parts = [Part() for _ in range(10)]
    where: list[tuple[int, str]] = []
    for _ in range(3):  # the first call measures them; the later ones know they are cheap
        side_by_side.search_parts(_tasks(10, 0, where), parts, [False] * 10)
    assert {name for _, name in where} == {threading.current_thread().name}
    assert all(0 < side_by_side.cost_of(p, False) < side_by_side.PARALLEL_MIN_S for p in parts)


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="side by side needs two cores")
def test_costly_parts_go_side_by_side_one_group_per_core() -> None:
    parts = [Part() for _ in range(6)]
    where: list[tuple[int, str]] = []
    side_by_side.search_parts(_tasks(6, 0.002, where), parts, [False] * 6)  # measured: 2 ms each
    where.clear()
    side_by_side.search_parts(_tasks(6, 0.002, where), parts, [False] * 6)
    threads = {name for _, name in where}
    assert threading.current_thread().name in threads  # the caller searches a group itself
    assert any(name.startswith("segment-search") for name in threads)
    assert len(threads) <= min(__import__("os").cpu_count() or 1, 6)


def test_side_by_side_that_measures_slower_gives_way_to_turns_but_probes_again() -> None:
    parts = [Part() for _ in range(4)]
    side_by_side._costs.update({p: {False: 1.0} for p in parts})  # costly enough to qualify
    side_by_side._gain.ratio = 1.5  # side by side measured slower than in turn
    threads: list[set[str]] = []
    for _ in range(side_by_side.PROBE_EVERY):
        where: list[tuple[int, str]] = []
        side_by_side.search_parts(_tasks(4, 0, where), parts, [False] * 4)
        side_by_side._costs.update({p: {False: 1.0} for p in parts})
        threads.append({name for _, name in where})
    in_turn = [t == {threading.current_thread().name} for t in threads]
    assert sum(in_turn) == side_by_side.PROBE_EVERY - 1  # all but the probe
    assert side_by_side._gain.ratio < 1.5  # the probe, far faster than the 4 s its parts were priced at, counted


def test_a_failing_part_fails_the_search() -> None:
    parts = [Part() for _ in range(4)]
    side_by_side._costs.update({p: {False: 1.0} for p in parts})

    def boom() -> int:
        raise RuntimeError("segment gone")

    tasks = [lambda: 1, boom, lambda: 3, lambda: 4]
    with pytest.raises(RuntimeError, match="segment gone"):
        side_by_side.search_parts(tasks, parts, [False] * 4)
