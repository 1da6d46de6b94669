"""Prometheus metrics: request counts and latency by route template; points, memory and LID per collection; points, memory, segments and liveness per shard."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.backends.flat_path import CHOOSER
from index.catalog import Catalog
from index.query.coalescer import MAX_BATCH

# Bucket bounds of the formed query batch sizes: 1, 2, 4, ... MAX_BATCH.
BATCH_BUCKETS = [1 << i for i in range(MAX_BATCH.bit_length()) if 1 << i <= MAX_BATCH]


def batch_histogram(family: HistogramMetricFamily, collection: str, sizes: dict[int, int]) -> None:
    buckets = [(str(bound), sum(n for size, n in sizes.items() if size <= bound)) for bound in BATCH_BUCKETS]
    family.add_metric([collection], [*buckets, ("+Inf", sum(sizes.values()))], sum_value=sum(size * n for size, n in sizes.items()))


class _CollectionCollector(Collector):
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        points = GaugeMetricFamily("trove_collection_points", "Points stored per collection", labels=["collection"])
        memory = GaugeMetricFamily("trove_collection_memory_bytes", "Index memory per collection", labels=["collection"])
        lid = GaugeMetricFamily(
            "trove_collection_lid", "Estimated local intrinsic dimensionality of the points in HNSW segments (mean, p10, p50, p90)", labels=["collection", "stat"]
        )
        shard_labels = ["collection", "shard", "node"]
        shard_up = GaugeMetricFamily("trove_shard_up", "1 when a sharded collection's shard answers, else 0", labels=shard_labels)
        shard_points = GaugeMetricFamily("trove_shard_points", "Points stored per shard", labels=shard_labels)
        shard_memory = GaugeMetricFamily("trove_shard_memory_bytes", "Index memory per shard", labels=shard_labels)
        shard_segments = GaugeMetricFamily("trove_shard_segments", "Segments per shard", labels=shard_labels)
        batches = HistogramMetricFamily("trove_query_batch_size", "Queries per batch the coalescer formed from concurrent single queries", labels=["collection"])
        lingered = CounterMetricFamily(
            "trove_query_linger_seconds", "Seconds the coalescer waited for a batch to fill, where measured costs said it pays", labels=["collection"]
        )
        for collection in self.catalog.all():
            info = collection.info()
            batch_histogram(batches, info["name"], collection.batch_sizes())
            lingered.add_metric([info["name"]], collection.lingered_seconds())
            points.add_metric([info["name"]], info["points"])
            memory.add_metric([info["name"]], info["memory_bytes"])
            for stat, value in (info["index"].get("lid") or {}).items():
                lid.add_metric([info["name"], stat], value)
            for shard in info.get("shards") or []:
                labels = [info["name"], str(shard["shard"]), shard.get("node", "")]
                shard_up.add_metric(labels, 1 if shard["state"] == "up" else 0)
                if shard["state"] == "up":
                    shard_points.add_metric(labels, shard["points"])
                    shard_memory.add_metric(labels, shard["memory_bytes"])
                    shard_segments.add_metric(labels, shard["segments"])
        yield from (points, memory, lid, batches, lingered, shard_up, shard_points, shard_memory, shard_segments, _flat_paths())


def _flat_paths() -> GaugeMetricFamily:
    """What the flat-search path measurement found, per (dimension, batch bucket): seconds per batch of each path."""
    family = GaugeMetricFamily(
        "trove_flat_search_seconds", "Measured seconds per flat search batch, by path; chosen=1 marks the path in use", labels=["dim", "batch", "path", "chosen"]
    )
    chosen = CHOOSER.choices()
    for (dim, batch), seconds in CHOOSER.timings_snapshot().items():
        for path, value in seconds.items():
            family.add_metric([str(dim), str(batch), path, str(int(chosen.get((dim, batch)) == path))], value)
    return family


class Metrics:
    def __init__(self, catalog: Catalog):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trove_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "trove_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(_CollectionCollector(catalog))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request; labels use the route template, so ids never explode cardinality."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - start)
