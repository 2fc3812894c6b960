"""Prometheus metrics: one registry for the process, served on ``--metrics-listen``.

Other modules update the objects below directly; they are cheap to call even when
no endpoint is served. Where each is fed from:

=================================  ==========================================================
metric                             fed by
=================================  ==========================================================
stateward_rpc_handled_total        transport layer (every RPC, per method and code)
stateward_rpc_duration_seconds     transport layer
stateward_rpc_in_flight            transport layer (streams count while open)
stateward_db_duration_seconds      ``Database.observer`` (read / write / commit)
stateward_event_head_sequence      ``Database.on_commit`` listener installed by the app, and
                                   ``set_event_heads`` at start-up (read from the database)
stateward_subscribers              SubscribeEvents: ``SUBSCRIBERS.inc()`` on open, ``.dec()`` at end
stateward_subscriber_lag_events    SubscribeEvents: ``SUBSCRIBER_LAG.observe(head - sent_sequence)``
                                   per delivered batch
stateward_subscriber_catchups      SubscribeEvents: ``SUBSCRIBER_CATCHUPS.inc()`` when a
                                   subscriber overflows its buffer and reads from the log
stateward_checkpoint_bytes_total   checkpoints: ``CHECKPOINT_BYTES.labels(direction="in").inc(n)``
                                   on upload/create, ``direction="out"`` on download
                                   (``CHECKPOINT_BYTES_IN`` / ``_OUT``, bound once)
stateward_cache_requests_total     caches: ``watch_cache("state", cache)`` once; the cache's own
                                   hit/miss counters are read at scrape time
stateward_cache_hit_ratio          derived at scrape time from the same counters
stateward_sweeper_actions_total    sweeper ``SWEEPER_ACTIONS.labels(action="task_timed_out").inc()``
stateward_retention_actions_total  retention: ``RETENTION_ACTIONS.labels(action=...).inc(n)``
                                   with action checkpoint_pruned, run_archived, blob_collected
=================================  ==========================================================
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from stateward.server.cache import ByteLRU
from stateward.server.config import ConfigError
from stateward.storage.database import EventDraft

# The *_created series double the exposition and no dashboard of ours uses them.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Latency buckets from 100 µs (a cached GetState) to 10 s (a big upload).
_LATENCY = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)

RPC_HANDLED = Counter(
    "stateward_rpc_handled",
    "RPCs completed, by method and status code",
    ["service", "method", "code"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "stateward_rpc_duration_seconds",
    "Time from the call reaching the server to its status",
    ["service", "method", "code"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
RPC_IN_FLIGHT = Gauge(
    "stateward_rpc_in_flight",
    "RPCs being served right now (open streams included)",
    ["service", "method"],
    registry=REGISTRY,
)
DB_DURATION = Histogram(
    "stateward_db_duration_seconds",
    "Database work: read = one read snapshot, write = one write function inside its savepoint, "
    "commit = one whole group commit (including the fsync)",
    ["kind"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
EVENT_HEAD = Gauge(
    "stateward_event_head_sequence",
    "Newest committed event sequence seen by this replica",
    ["namespace"],
    registry=REGISTRY,
)
SUBSCRIBERS = Gauge(
    "stateward_subscribers",
    "Open SubscribeEvents streams on this replica",
    registry=REGISTRY,
)
SUBSCRIBER_LAG = Histogram(
    "stateward_subscriber_lag_events",
    "How many events a subscriber was behind the head on delivery",
    buckets=(0, 1, 10, 100, 1000, 10000, 100000),
    registry=REGISTRY,
)
SUBSCRIBER_CATCHUPS = Counter(
    "stateward_subscriber_catchups",
    "Subscribers that overflowed their buffer and read the log",
    registry=REGISTRY,
)
CHECKPOINT_BYTES = Counter(
    "stateward_checkpoint_bytes",
    "Checkpoint payload bytes received (in) and sent (out)",
    ["direction"],
    registry=REGISTRY,
)
SWEEPER_ACTIONS = Counter(
    "stateward_sweeper_actions",
    "Actions taken by the lease sweeper",
    ["action"],
    registry=REGISTRY,
)
RETENTION_ACTIONS = Counter(
    "stateward_retention_actions",
    "Records removed or archived by retention",
    ["action"],
    registry=REGISTRY,
)

# Bound once: the hot paths call .inc()/.observe() on these without a label lookup.
CHECKPOINT_BYTES_IN = CHECKPOINT_BYTES.labels(direction="in")
CHECKPOINT_BYTES_OUT = CHECKPOINT_BYTES.labels(direction="out")

# Caches report by themselves: their own hit/miss counters are read at scrape time, so a
# lookup costs nothing extra. Weak references: a stopped server's cache disappears, and
# what it had counted (as of the last scrape) moves to a retired total, so the counters
# never go down.
_CACHES: dict[str, weakref.WeakKeyDictionary[ByteLRU[Any, Any], list[int]]] = {}
_RETIRED: dict[str, list[int]] = {}


def watch_cache(name: str, cache: ByteLRU[Any, Any]) -> None:
    """Expose ``cache``'s hits and misses as ``stateward_cache_requests{cache=name}``."""
    seen = [0, 0]  # hits and misses at the last scrape
    _CACHES.setdefault(name, weakref.WeakKeyDictionary())[cache] = seen
    _RETIRED.setdefault(name, [0, 0])
    weakref.finalize(cache, _retire, name, seen)


def _retire(name: str, seen: list[int]) -> None:
    retired = _RETIRED[name]
    retired[0] += seen[0]
    retired[1] += seen[1]


class _CacheCollector(Collector):
    """Lookups per cache and result, and the lifetime hit ratio (for a recent one use rate())."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        requests = CounterMetricFamily(
            "stateward_cache_requests",
            "Hot-read cache lookups, by cache and result (hit or miss)",
            labels=["cache", "result"],
        )
        ratio = GaugeMetricFamily(
            "stateward_cache_hit_ratio",
            "Cache hits / lookups since start, per cache",
            labels=["cache"],
        )
        for name, caches in sorted(_CACHES.items()):
            hits, misses = _RETIRED[name]
            for cache, seen in list(caches.items()):
                seen[:] = cache.hits, cache.misses
                hits += seen[0]
                misses += seen[1]
            requests.add_metric([name, "hit"], hits)
            requests.add_metric([name, "miss"], misses)
            ratio.add_metric([name], hits / (hits + misses) if hits + misses else 0.0)
        yield requests
        yield ratio


REGISTRY.register(_CacheCollector())


# -- hooks the app installs ---------------------------------------------------------------


def observe_db(kind: str, seconds: float) -> None:
    """``Database.observer``: called from the read pool and the writer thread."""
    DB_DURATION.labels(kind=kind).observe(seconds)


def set_event_heads(heads: dict[str, int]) -> None:
    """Start-up: each namespace's committed head, so the gauge is right before any write."""
    for namespace, head in heads.items():
        EVENT_HEAD.labels(namespace=namespace).set(head)


def record_event_heads(events: list[EventDraft]) -> None:
    """``Database.on_commit`` listener: sequences rise within a batch, so the last one wins."""
    heads = {event.namespace: event.sequence for event in events}
    for namespace, head in heads.items():
        EVENT_HEAD.labels(namespace=namespace).set(head)


class MethodMetrics:
    """The RPC metrics of one method, recorded by the transport layer on every call.

    Built once per method when its handler is wrapped: the in-flight child is bound
    then, the handled/duration children once per status code seen.
    """

    __slots__ = ("_labels", "_in_flight", "_done")

    def __init__(self, full_method: str) -> None:
        _, _, rest = full_method.partition("/")
        service, _, method = rest.partition("/")
        self._labels = (service, method)
        self._in_flight = RPC_IN_FLIGHT.labels(service, method)
        self._done: dict[str, tuple[Counter, Histogram]] = {}

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self, code: str, seconds: float) -> None:
        self._in_flight.dec()
        children = self._done.get(code)
        if children is None:
            labels = (*self._labels, code)
            handled, duration = RPC_HANDLED.labels(*labels), RPC_DURATION.labels(*labels)
            children = self._done[code] = (handled, duration)
        children[0].inc()
        children[1].observe(seconds)


# -- the HTTP endpoint ------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port); raises ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(
            f"metrics_listen: expected host:port such as 0.0.0.0:9464, got {listen!r}"
        )
    return host.strip("[]"), int(port)


class MetricsServer:
    """The /metrics endpoint in a daemon thread (prometheus-client's WSGI server)."""

    def __init__(self, listen: str) -> None:
        host, port = parse_listen(listen)
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        self.port: int = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
