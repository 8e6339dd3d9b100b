"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process),
and who may scrape them at ``GET /metrics`` (the root path Prometheus expects): a scrape token of its own
(``auth.scrape_token``), an allow-listed address (``auth.scrape_allow``), or any API token.

``docs/grafana/maskwatch.json`` is a Grafana dashboard built from these metrics (``tests/test_console_api.py``
checks that every query names one of them)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from maskwatch.service.live import LiveFigures

__all__ = ["CONTENT_TYPE", "Metrics", "scrape_allowed"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


#: the ``camera`` label of cameras past the cap (``limits.metric_cameras``)
OTHER = "_other"


class Metrics:
    """The service's Prometheus metrics. At most ``max_cameras`` cameras get series of their own; later
    ones (a fleet node inventing camera names) share the ``camera="_other"`` series, so the number of
    series stays bounded whatever remote nodes send."""

    def __init__(self, max_cameras: int = 500) -> None:
        self.max_cameras = max_cameras
        self._cameras: set[str] = set()
        self._labels: set[str] = set()  # verdict labels (a model has a handful; a remote node may send any)
        r = self.registry = CollectorRegistry()
        self.fps = Gauge(
            "maskwatch_camera_analysed_fps", "analysed frames per second (last 10 s)", ["camera"], registry=r
        )
        self.lag = Gauge(
            "maskwatch_camera_lag_seconds",
            "capture-to-result lag: p95 over the last 10 s; p50 and max of the last stats bucket",
            ["camera", "quantile"],
            registry=r,
        )
        self.frames = Counter("maskwatch_camera_frames_analysed", "frames analysed", ["camera"], registry=r)
        self.dropped = Counter(
            "maskwatch_camera_frames_dropped", "live frames replaced before analysis", ["camera"], registry=r
        )
        self.events = Counter("maskwatch_events", "engine events received", ["camera", "type"], registry=r)
        self.people = Counter("maskwatch_people", "people counted (track ended)", ["camera", "label"], registry=r)
        self.errors = Counter(
            "maskwatch_camera_errors", "camera failures (lost, reconnecting, failed)", ["camera", "state"], registry=r
        )
        self.up = Gauge("maskwatch_camera_up", "1 when the camera delivers frames", ["camera"], registry=r)
        self.ingest_backlog = Gauge("maskwatch_ingest_backlog", "events waiting to be stored", registry=r)
        self.ingest_errors = Counter("maskwatch_ingest_errors", "failed database writes (retried)", registry=r)
        self.ingest_dropped = Gauge(
            "maskwatch_ingest_dropped", "events refused because the buffer was full", registry=r
        )
        self.requests = Histogram(
            "maskwatch_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.infer = Histogram(
            "maskwatch_infer_seconds",
            "POST /infer analysis time",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
        )
        self.alerts_firing = Gauge("maskwatch_alerts_firing", "alerts firing now", registry=r)
        self.dead_letters = Counter(
            "maskwatch_dead_letters", "messages or events recorded as dead letters (not stored)", ["reason"], registry=r
        )
        self.webhooks = Counter("maskwatch_webhook_deliveries", "webhook delivery attempts", ["ok"], registry=r)

    def camera(self, name: str) -> str:
        """The ``camera`` label for ``name``: itself while there is room, else :data:`OTHER`."""
        if name in self._cameras:
            return name
        if len(self._cameras) >= self.max_cameras:
            return OTHER
        self._cameras.add(name)
        return name

    def observe(self, event: Any) -> None:
        camera = self.camera(event.source)
        self.events.labels(camera, event.type).inc()
        if event.type == "stats":
            for q in ("p50", "max"):  # fps and p95 come live from observe_live
                value = getattr(event.lag, q)
                if value is not None:
                    self.lag.labels(camera, q).set(value)
            self.frames.labels(camera).inc(event.frames_analysed)
            self.dropped.labels(camera).inc(max(0, event.frames_dropped))
        elif event.type == "track_ended":
            label = event.label if event.label in self._labels or len(self._labels) < 16 else OTHER
            self._labels.add(label)
            self.people.labels(camera, label).inc()
        elif event.type == "source_status":
            self.up.labels(camera).set(1 if event.state == "live" else 0)
            if event.state in ("lost", "reconnecting", "failed"):
                self.errors.labels(camera, event.state).inc()

    def observe_live(self, stats: Mapping[str, LiveFigures]) -> None:
        """The engine's live figures per camera (``StreamEngine.source_stats()``, last 10 s)."""
        for raw, source in stats.items():
            name = self.camera(raw)
            self.fps.labels(name).set(source.analysed_fps)
            if source.lag_p95 is not None:
                self.lag.labels(name, "p95").set(source.lag_p95)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def scrape_allowed(*, token: str | None, address: str | None, scrape_token: str | None, allow: Sequence[str]) -> bool:
    """Whether a scrape of ``GET /metrics`` may go on without an API token: its bearer ``token`` is the
    configured ``scrape_token`` (compared in constant time), or its client ``address`` is in ``allow``."""
    if scrape_token and token and hmac.compare_digest(token.encode(), scrape_token.encode()):
        return True
    if address and allow:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in allow)
    return False
