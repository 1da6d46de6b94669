"""The one way texts reach a model: sorted by token length, cut into batches by a token budget, answered in the caller's order.

A transformer pads every text of a batch to the batch's longest one, so a fixed count of mixed-length texts
spends most of its work on padding (WordNet glosses: 0.5x the rate of sorted batches at 256 a batch).
Sorting by length makes neighbours alike; a budget on padded tokens (texts x longest) keeps each batch's
work, and so its memory and the wait it causes a query behind it, about constant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from encoders.threads import INFERENCE_SLOT

T = TypeVar("T")
Item = TypeVar("Item")  # what a batch is made of: the texts, or each text's token ids
OnDone = Callable[[int], None]  # called with how many texts are finished so far
# Batches a stream a caller runs per hold of the inference slot, at most: a hold ends (and progress is
# reported) about every second of a long call, and each end leaves a stream idle for at most one batch.
HOLD_PER_STREAM = 8


@dataclass(frozen=True)
class BatchPolicy:
    """``fixed``: batches of that many texts in the caller's order, unsorted (the old policy, kept for benchmarks)."""

    token_budget: int = 2048  # padded tokens per batch; chosen on WordNet glosses, MiniLM, 2 cores (bench encode)
    max_batch: int = 256
    # What running one more batch costs, in padded tokens' worth of work (OpenVINO bf16, MiniLM, 2 cores: 3-6 ms
    # a batch at about 20k tokens/s): the planner cuts a sorted run where saving padding pays for the extra batch.
    batch_cost_tokens: int = 120
    fixed: int | None = None

    def describe(self) -> str:
        return f"fixed {self.fixed}" if self.fixed else f"sorted, {self.token_budget} tokens"


def plan_batches(lengths: Sequence[int], policy: BatchPolicy) -> list[np.ndarray]:
    """Positions into ``lengths``, grouped: each position once, shortest first; a batch's size times its longest
    length stays within the budget (a single text longer than the budget is a batch of its own).

    Among the cuts of the sorted order that keep to the budget, the one with the least work: padded tokens plus
    ``batch_cost_tokens`` a batch (dynamic programming over where each batch ends). Filling every batch to the
    budget instead pads a short call badly: WordNet glosses in calls of 256 were padded 37% over their tokens
    that way, 13% this way (in one call of 1,500: 9% and 4%).
    """
    n = len(lengths)
    if policy.fixed:
        return [np.arange(start, min(start + policy.fixed, n)) for start in range(0, n, policy.fixed)]
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    ascending = np.asarray(lengths, dtype=np.int64)[order]
    best = np.zeros(n + 1)  # best[j]: least work for the first j sorted texts
    start_of = np.zeros(n + 1, dtype=np.int64)  # where the last batch of that best plan starts
    for end in range(1, n + 1):
        longest = int(ascending[end - 1])  # ascending: the last text is the batch's longest
        fits = max(1, min(policy.max_batch, policy.token_budget // max(longest, 1)))
        starts = np.arange(max(end - fits, 0), end)
        work = best[starts] + (end - starts) * longest + policy.batch_cost_tokens
        pick = int(np.argmin(work))
        best[end], start_of[end] = work[pick], starts[pick]
    batches: list[np.ndarray] = []
    end = n
    while end > 0:
        batches.append(order[start_of[end] : end])
        end = int(start_of[end])
    return batches[::-1]


def run_batches(
    texts: Sequence[Item],
    lengths: Sequence[int],
    policy: BatchPolicy,
    embed: Callable[[Iterator[list[Item]]], list[Sequence[T]]],
    on_done: OnDone | None = None,
    streams: int = 1,
) -> list[T]:
    """``embed`` answers the batches it draws from an iterator (of ``texts``' items), one result per text of each, and keeps its
    runtime's ``streams`` busy meanwhile (the next batch is tokenised while the running ones compute). It runs
    under the inference slot, which it yields as soon as another caller waits, or after HOLD_PER_STREAM batches
    a stream so that progress (``on_done``) is reported as the call goes. Results come back in the order of
    ``texts``."""
    out: list[T | None] = [None] * len(texts)
    done = 0
    # The most work first (padded tokens), so that the streams finish together: the last batch of a call runs
    # while the other streams idle, and it is then the smallest.
    batches = sorted(plan_batches(lengths, policy), key=lambda batch: -len(batch) * max(lengths[i] for i in batch))
    start = 0
    while start < len(batches):
        taken: list[np.ndarray] = []

        def feed() -> Iterator[list[Item]]:
            for batch in batches[start : start + HOLD_PER_STREAM * streams]:
                if taken and INFERENCE_SLOT.wanted():
                    return
                taken.append(batch)
                yield [texts[i] for i in batch]

        with INFERENCE_SLOT:
            results = embed(feed())
        for batch, batch_results in zip(taken, results, strict=True):
            for position, result in zip(batch.tolist(), batch_results, strict=True):
                out[position] = result
            done += len(batch)
        start += len(taken)
        if on_done is not None:
            on_done(done)
    return out  # type: ignore[return-value]  # every position was filled: plan_batches covers each once
