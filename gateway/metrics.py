"""Every chert_gateway_* metric, in one place, on a registry of its own.

Labels take only bounded values (routes, outcomes, phases, operations): no
ids, file names or chat ids, so the series count never grows with traffic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from gateway import __version__

# Seconds: from a fast small file to a 100 MB upload on a slow link.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "chert_gateway_requests",
            "API requests by route and outcome",
            ["route", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "chert_gateway_request_duration_seconds",
            "API request duration by route and outcome",
            ["route", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            "chert_gateway_phase_duration_seconds",
            "Time spent in each phase of an upload",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.received_bytes = Counter(
            "chert_gateway_received_bytes", "Body bytes received from callers", registry=r
        )
        self.upstream_bytes = Counter(
            "chert_gateway_upstream_bytes", "Body bytes fully delivered to Chert", registry=r
        )
        self.in_flight = Gauge("chert_gateway_uploads_in_flight", "Uploads running now", registry=r)
        self.upstream_retries = Counter(
            "chert_gateway_upstream_retries",
            "Chert calls retried, by operation and reason",
            ["operation", "reason"],
            registry=r,
        )
        Info("chert_gateway_build", "Gateway build information", registry=r).info(
            {"version": __version__}
        )
        ProcessCollector(registry=r)
