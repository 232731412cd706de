"""Prometheus metrics of one server, in its own registry so several apps can live in one process (tests, gateway)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


KNOWN_PATHS = frozenset({"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/feedback"})


class ServeMetrics:
    def __init__(self, prefix: str = "llamaduo_serve"):
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{prefix}_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry)
        self.latency = Histogram(f"{prefix}_request_seconds", "Request latency (to the last byte of non-streamed responses)", ["path"], registry=self.registry)
        self.prompt_tokens = Counter(f"{prefix}_prompt_tokens", "Prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter(f"{prefix}_completion_tokens", "Tokens generated", registry=self.registry)
        self.queue = Gauge(f"{prefix}_queue_waiting", "Requests waiting for a generation slot", registry=self.registry)
        self.engine_crashes = Counter(f"{prefix}_engine_crashes", "Engine worker processes that died or hung", registry=self.registry)
        self.engine_restarts = Counter(f"{prefix}_engine_restarts", "Engine worker processes started again after a crash", registry=self.registry)

    def engine_event(self, event: str) -> None:
        (self.engine_crashes if event == "crash" else self.engine_restarts).inc()

    def observe(self, path: str, status: int, seconds: float) -> None:
        # Unknown paths share one label so a scanner cannot blow up the label set.
        known = path if path in KNOWN_PATHS else "other"
        self.requests.labels(known, str(status)).inc()
        self.latency.labels(known).observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def render(self, waiting: int) -> tuple[bytes, str]:
        self.queue.set(waiting)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
