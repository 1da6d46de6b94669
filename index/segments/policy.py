"""Which rebuild the optimizer runs next: seal the appendable segment, vacuum dead rows, merge small segments.

Merging is tiered, in the manner of Lucene's merge policies: segments fall into tiers by their live size
(tier t holds sizes in [seal * f^t, seal * f^(t+1)) for the merge factor f); a tier that collects f segments
merges its f smallest into one segment of the next tier, never past ``max_segment_points``. Each point is so
rewritten about log_f(N / seal) times over its life, and a collection holds O(f log N) segments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

TaskKind = Literal["seal", "merge", "vacuum", "calibrate"]


@dataclass(frozen=True)
class EngineSettings:
    seal_points: int = 20_000  # the appendable segment is sealed (indexed) once it holds this many rows
    max_segment_points: int = 1_000_000  # no rebuild writes a larger segment
    merge_factor: int = 10  # segments per tier before they merge
    vacuum_dead_share: float = 0.2  # a sealed segment whose dead share reaches this is rewritten without them

    def __post_init__(self) -> None:
        if self.seal_points < 1 or self.max_segment_points < self.seal_points or self.merge_factor < 2 or not 0 < self.vacuum_dead_share <= 1:
            raise ValueError(f"invalid engine settings: {self}")


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    segments: tuple[str, ...] = ()  # the sealed segments a merge or vacuum rewrites, or a calibration measures (a seal takes the appendable)
    points: int = 0  # rows the rebuild will write, for progress


@dataclass(frozen=True)
class SegmentStats:
    id: str
    size: int  # positions, dead included
    dead: int

    @property
    def live(self) -> int:
        return self.size - self.dead


def tier(live: int, settings: EngineSettings) -> int:
    return max(0, math.floor(math.log(max(live, 1) / settings.seal_points, settings.merge_factor))) if live >= settings.seal_points else 0


def next_task(appendable_rows: int, frozen_rows: int, sealed: Sequence[SegmentStats], settings: EngineSettings) -> Task | None:
    """The most urgent rebuild: a pending seal, then the deadest segment to vacuum, then a merge."""
    if frozen_rows or appendable_rows >= settings.seal_points:
        return Task("seal", (), appendable_rows + frozen_rows)
    deadest = max(sealed, key=lambda s: s.dead / max(s.size, 1), default=None)
    if deadest is not None and deadest.dead and deadest.dead / max(deadest.size, 1) >= settings.vacuum_dead_share:
        return Task("vacuum", (deadest.id,), deadest.live)
    tiers: dict[int, list[SegmentStats]] = {}
    for s in sealed:
        tiers.setdefault(tier(s.live, settings), []).append(s)
    for _, members in sorted(tiers.items()):
        if len(members) < settings.merge_factor:
            continue
        chosen = sorted(members, key=lambda s: (s.live, s.id))[: settings.merge_factor]
        total = sum(s.live for s in chosen)
        while len(chosen) > 1 and total > settings.max_segment_points:
            total -= chosen.pop().live
        if len(chosen) > 1:
            return Task("merge", tuple(s.id for s in chosen), total)
    return None
