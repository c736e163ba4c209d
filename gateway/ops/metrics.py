"""Every chert_gateway_* metric, in one place, on a registry of its own.

Base units (seconds, bytes), `_total` on counters (prometheus_client adds
it), and labels that take only bounded values: route names, outcomes,
phases, operations, HTTP statuses, Chert's documented codes. No ids, file
names or chat ids, so the number of series never grows with traffic.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

from gateway import __version__

# Seconds: from a fast small file to a 100 MB upload on a slow link.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip
SIZE_BUCKETS = tuple(
    float(x) for x in (1e3, 1e4, 64e3, 1e5, 256e3, 1e6, 5e6, 1e7, 25e6, 5e7, 104857600)
)
THROUGHPUT_BUCKETS = (1e5, 1e6, 5e6, 1e7, 25e6, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9)
# Chert's documented codes; anything else is counted as "other".
CHERT_CODES = frozenset({1002, 1003, 3002, 4001})

LabelledMetric = TypeVar("LabelledMetric", Counter, Histogram)


class Labelled(Generic[LabelledMetric]):
    """A labelled metric whose children are looked up once each.

    prometheus_client's labels() checks the values, builds a key and takes
    a lock on every call, several times per upload (docs/performance.md
    has the cost). Label values here are bounded, so this cache is too.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: LabelledMetric) -> None:
        self.metric: LabelledMetric = metric
        self._children: dict[tuple[str, ...], LabelledMetric] = {}

    def labels(self, *values: str) -> LabelledMetric:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


# Each counter and histogram would also export a `*_created` series (its
# start time): a series per child that no dashboard or alert reads.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Labelled(
            Counter(
                "chert_gateway_requests",
                "API requests (uploads, sends, downloads) by route and outcome",
                ["route", "outcome"],
                registry=r,
            )
        )
        self.responses = Labelled(
            Counter(
                "chert_gateway_responses",
                "API answers by route, HTTP status class and error code (ok for a success)",
                ["route", "status_class", "code"],
                registry=r,
            )
        )
        self.request_seconds = Labelled(
            Histogram(
                "chert_gateway_request_duration_seconds",
                "API request duration by route and outcome",
                ["route", "outcome"],
                buckets=DURATION_BUCKETS,
                registry=r,
            )
        )
        self.phase_seconds = Labelled(
            Histogram(
                "chert_gateway_phase_duration_seconds",
                "Time spent in each phase of an upload: create_slot, upload, send",
                ["phase"],
                buckets=DURATION_BUCKETS,
                registry=r,
            )
        )
        self.upstream_seconds = Labelled(
            Histogram(
                "chert_gateway_upstream_duration_seconds",
                "Duration of each call to Chert (each attempt), by operation and HTTP status",
                ["operation", "status"],
                buckets=DURATION_BUCKETS,
                registry=r,
            )
        )
        self.received_bytes = Counter(
            "chert_gateway_received_bytes", "Body bytes received from callers", registry=r
        )
        self.downloaded_bytes = Counter(
            "chert_gateway_downloaded_bytes",
            "File bytes streamed from Chert to callers (downloads)",
            registry=r,
        )
        self.upstream_bytes = Counter(
            "chert_gateway_upstream_bytes", "Body bytes delivered to Chert", registry=r
        )
        self.upload_size = Histogram(
            "chert_gateway_upload_size_bytes",
            "Size of each file delivered to Chert",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.upload_throughput = Histogram(
            "chert_gateway_upload_throughput_bytes_per_second",
            "Bytes per second of each upload to Chert (size / upload phase)",
            buckets=THROUGHPUT_BUCKETS,
            registry=r,
        )
        self.first_byte_relay = Labelled(
            Histogram(
                "chert_gateway_first_byte_relay_seconds",
                "From the first body byte received to the first byte handed to Chert",
                ["mode"],
                buckets=DURATION_BUCKETS,
                registry=r,
            )
        )
        self.in_flight = Gauge("chert_gateway_uploads_in_flight", "Uploads running now", registry=r)
        self.max_in_flight = Gauge(
            "chert_gateway_uploads_max_in_flight",
            "GATEWAY_MAX_IN_FLIGHT: uploads that may run at once",
            registry=r,
        )
        self.draining = Gauge(
            "chert_gateway_draining", "1 while the gateway drains after SIGTERM", registry=r
        )
        self.spool_used = Gauge(
            "chert_gateway_spool_used_bytes", "Bytes held in the disk spool", registry=r
        )
        self.spool_capacity = Gauge(
            "chert_gateway_spool_capacity_bytes", "GATEWAY_SPOOL_MAX_BYTES", registry=r
        )
        self.idempotency_entries = Gauge(
            "chert_gateway_idempotency_entries",
            "Idempotency keys remembered by this process (running and completed; "
            "with a shared store, those of its outages)",
            registry=r,
        )
        # Labelled so that it is exported only when a shared store is configured.
        self.idempotency_store_up = Gauge(
            "chert_gateway_idempotency_store_up",
            "1 while the shared idempotency store (GATEWAY_IDEMPOTENCY_URL) answers, "
            "0 while keys fall back to this replica's own store",
            ["store"],
            registry=r,
        )
        self.idempotency_fallbacks = Counter(
            "chert_gateway_idempotency_fallbacks",
            "Keyed requests remembered by this replica alone: the shared store was unreachable",
            registry=r,
        )
        self.upstream_retries = Labelled(
            Counter(
                "chert_gateway_upstream_retries",
                "Chert calls retried, by operation and reason",
                ["operation", "reason"],
                registry=r,
            )
        )
        # Callers are named in GATEWAY_CLIENT_TOKENS: the label is bounded by it.
        self.caller_in_flight = Gauge(
            "chert_gateway_caller_uploads_in_flight",
            "Uploads running now, by named caller",
            ["caller"],
            registry=r,
        )
        self.caller_limited = Labelled(
            Counter(
                "chert_gateway_caller_limited",
                "Uploads refused with 429, by named caller and quota (in_flight, rate)",
                ["caller", "reason"],
                registry=r,
            )
        )
        self.caller_max_in_flight = Gauge(
            "chert_gateway_caller_max_in_flight",
            "GATEWAY_CALLER_MAX_IN_FLIGHT (0: none)",
            registry=r,
        )
        self.caller_rate = Gauge(
            "chert_gateway_caller_rate",
            "GATEWAY_CALLER_RATE, uploads per second (0: none)",
            registry=r,
        )
        self.chert_errors = Labelled(
            Counter(
                "chert_gateway_chert_errors",
                "Error codes Chert answered with, by operation",
                ["operation", "code"],
                registry=r,
            )
        )
        Info("chert_gateway_build", "Gateway build information", registry=r).info(
            {"version": __version__}
        )
        ProcessCollector(registry=r)

    # -- chert.ChertObserver ------------------------------------------------------

    def upstream_call(self, operation: str, status: str, seconds: float) -> None:
        self.upstream_seconds.labels(operation, status).observe(seconds)

    def upstream_retry(self, operation: str, reason: str) -> None:
        self.upstream_retries.labels(operation, reason).inc()

    def response(self, route: str, status: int, code: str | None) -> None:
        """One answer; `code` is the error's (bounded by the error tree)."""
        self.responses.labels(route, f"{status // 100}xx", code or "ok").inc()

    def chert_error(self, operation: str, code: int) -> None:
        label = str(code) if code in CHERT_CODES else "other"
        self.chert_errors.labels(operation, label).inc()
