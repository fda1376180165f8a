"""Prometheus metrics: what each request, inference and model load did, served at GET /metrics.

Labels stay low-cardinality on purpose: `endpoint` is the route template (or "unmatched"),
`model` and `version` are only ever set from a model the repository actually holds (anything
else is "none"), `status` is the HTTP status code.

Several workers (`python -m service` with workers > 1): `__main__` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before any worker imports prometheus_client;
each worker then writes its values to files there and `render` aggregates every worker's files
(counters and histograms sum; in-flight sums over live workers; model status is the max over
live workers).

A request is noted in a list as it ends; `flush` records the noted requests with prometheus-client's
own `inc` and `observe` (on label children looked up once per label tuple) in one pass, away
from the request, and publishes the in-flight count, a plain integer, to its gauge. It runs on a
timer (`FLUSH_SECONDS` after a request finds none pending), every `FLUSH_REQUESTS` requests, and
right before this worker renders /metrics, so a scrape is exact for the worker answering it and
at most `FLUSH_SECONDS` stale for the other workers.
"""

from __future__ import annotations

import asyncio
import glob
import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               ProcessCollector, disable_created_metrics, generate_latest, multiprocess)

from service.http import corked

NONE = "none"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
STATUSES = ("ready", "failed")
FLUSH_SECONDS = 1.0
FLUSH_REQUESTS = 256  # requests noted before `flush` records them: a short pause, not a long one


def multiprocess_dir() -> str | None:
    """The shared directory of multiprocess mode, when it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """One app's metrics, in its own registry so that apps (and tests) never share counts."""

    def __init__(self) -> None:
        # A `_created` sample beside each counter and histogram doubles the series a scrape reads, for
        # a timestamp Prometheus does not use (`process_start_time_seconds` says when the server started).
        disable_created_metrics()  # prometheus-client's switch is for the whole process
        self.registry = r = CollectorRegistry(auto_describe=True)
        if multiprocess_dir() is None:  # the process's CPU, memory and files (one process: its own)
            ProcessCollector(registry=r)
        req = ("model", "version", "endpoint", "status")
        self.requests = Counter("tinyserve_requests", "HTTP requests answered.", req, registry=r)
        self.latency = Histogram("tinyserve_request_duration_seconds", "Time from request start to the "
                                 "last response byte.", req, buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("tinyserve_inference_duration_seconds", "Model time per request: "
                                   "the onnxruntime run and the answer made of its output, with any wait for a batch.",
                                   ("model", "version"), buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Histogram("tinyserve_request_rows", "Rows (instances) per inference request.",
                              ("model", "version", "endpoint"), buckets=ROW_BUCKETS, registry=r)
        self.in_flight = Gauge("tinyserve_requests_in_flight", "Requests being served right now.",
                               registry=r, multiprocess_mode="livesum")
        self.load_failures = Counter("tinyserve_model_load_failures", "Model version loads that failed "
                                     "validation (bad card, hash, graph or golden examples).", ("model",), registry=r)
        self.version_status = Gauge("tinyserve_model_version_status", "1 for a model version's current "
                                    "status (ready or failed), 0 otherwise; removed versions are 0.",
                                    ("model", "version", "status"), registry=r, multiprocess_mode="livemax")
        self.refused = Counter("tinyserve_connections_refused", "Connections answered and closed before a "
                               "request reached the app, by reason: too_many_connections, idle_closed (to make "
                               "room), head_timeout, head_too_large, upgrade.", ("reason",), registry=r)
        self._refused_seen = dict(corked.refusals())  # the process's counts already published (by another app)
        self.in_flight_now = 0  # published to `in_flight` by `flush`
        self._flush_handle: asyncio.TimerHandle | None = None
        self._statuses: set[tuple[str, str]] = set()
        self._removed: set[tuple[str, str]] = set()  # versions whose series went: requests then answered add none
        self._children: dict[tuple, tuple] = {}
        self._pending: list[tuple] = []  # one entry per answered request, until `flush` records it

    def observe(self, model: str, version: str, endpoint: str, status: int, seconds: float,
                rows: int | None = None, inference: float | None = None) -> None:
        """Note one answered request: its latency and, for inference, its rows and model time."""
        self._pending.append((model, version, endpoint, status, seconds, rows, inference))
        if len(self._pending) >= FLUSH_REQUESTS:
            self.flush()
        elif self._flush_handle is None:
            try:
                self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop (a direct call): the next render records it
                pass

    def flush(self) -> None:
        """Record every noted request with prometheus-client, and publish the in-flight count."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, []
        counts: dict[tuple, int] = {}
        removed = self._removed
        for model, version, endpoint, status, seconds, rows, inference in pending:
            if removed and (model, version) in removed:  # it was still running when its version went
                continue
            key = (model, version, endpoint, status)
            counts[key] = counts.get(key, 0) + 1
            children = self._children.get(key) or self._labelled(key)
            children[1].observe(seconds)
            if rows is not None:
                if children[2] is None:
                    children = self._labelled(key, inference=True)
                children[2].observe(inference)
                children[3].observe(rows)
        for key, count in counts.items():
            self._children[key][0].inc(count)
        self.in_flight.set(self.in_flight_now)
        refused = corked.refusals()
        if refused != self._refused_seen:  # the connection guard's counts, outside any request
            for reason, count in refused.items():
                self.refused.labels(reason).inc(count - self._refused_seen.get(reason, 0))
            self._refused_seen = dict(refused)

    def _labelled(self, key: tuple, inference: bool = False) -> tuple:
        # The inference and rows series only once such a request is seen: a health probe's labels
        # would otherwise publish empty histograms (model "none", endpoint "/health/ready").
        model, version, endpoint, status = key
        labels = (model, version, endpoint, str(status))
        children = self._children[key] = (
            self.requests.labels(*labels), self.latency.labels(*labels),
            self.inference.labels(model, version) if inference else None,
            self.rows.labels(model, version, endpoint) if inference else None)
        return children

    def record_models(self, entries: dict, failed: list[dict]) -> None:
        """Publish every version's status after a (re)load, and count the loads that failed.

        A removed version keeps its status series (at 0), but its request, latency, inference and
        row series go, and requests to it still running then add none back: each holds a
        histogram, and a server that publishes a version a day would otherwise keep every one of
        them for good. (In multiprocess mode they stay in the shared
        files: prometheus-client removes a series from this process's registry only.)
        """
        for item in failed:
            self.load_failures.labels(item["model"]).inc()
        now = {(name, str(v)): e.status for name, versions in entries.items() for v, e in versions.items()}
        for key in self._statuses | now.keys():
            for status in STATUSES:
                self.version_status.labels(*key, status).set(1 if now.get(key) == status else 0)
        self._forget(self._statuses - now.keys())
        self._removed = self._statuses - now.keys()
        self._statuses |= now.keys()

    def _forget(self, versions: set[tuple[str, str]]) -> None:
        if not versions:
            return
        self.flush()  # what is noted of those versions is recorded before their series go
        gone = [key for key in self._children if key[:2] in versions]
        inferred = [key for key in gone if self._children[key][2] is not None]
        by_metric = {self.requests: {(*k[:3], str(k[3])) for k in gone}, self.inference: {k[:2] for k in inferred},
                     self.rows: {k[:3] for k in inferred}}
        by_metric[self.latency] = by_metric[self.requests]
        for metric, label_sets in by_metric.items():
            for labels in label_sets:
                metric.remove(*labels)
        for key in gone:
            del self._children[key]

    def render(self) -> tuple[bytes, str]:
        """The exposition text (every worker's, in multiprocess mode) and its content type."""
        self.flush()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        _forget_dead_workers(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exit() -> None:
    """Drop this worker's live gauges from the multiprocess files (a no-op in one process)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that died without `worker_exit` (killed, crashed): uvicorn
    starts a new worker in their place, and their last values would otherwise count for good."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = path.rsplit("_", 1)[1].removesuffix(".db")
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
