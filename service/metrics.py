"""Prometheus metrics: request latency by route, and time per pipeline stage."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.timing import Timings

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "faceid_requests", "Requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "faceid_request_seconds", "Request latency by route.", ["route"], buckets=_BUCKETS, registry=self.registry
        )
        self.stage = Histogram(
            "faceid_stage_seconds", "Time per pipeline stage.", ["stage"], buckets=_BUCKETS, registry=self.registry
        )
        self.gallery_size = Gauge("faceid_gallery_faces", "Faces in the search index.", registry=self.registry)

    def observe(self, timings: Timings) -> None:
        for name, seconds in timings.stages.items():
            self.stage.labels(name).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
