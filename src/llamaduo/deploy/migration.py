"""The migration loop inside one gateway replica: its mode (shared through the capture store), live judging, the
decision-maker that holds the store's lease and applies the policy, and the live metrics snapshot for /metrics.

The request path touches only `router` and the non-blocking hooks; everything that reads the database, asks a
judge or polls the engine runs in background threads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from llamaduo.deploy.canary import Router
from llamaduo.deploy.config import GatewayConfig

log = logging.getLogger("llamaduo.gateway")


def health_url(base_url: str) -> str:
    """serve's /health beside its /v1 base URL."""
    base = base_url.rstrip("/")
    return (base[:-3] if base.endswith("/v1") else base) + "/health"


class Migration:
    """What the gateway asks about routing and tells about finished pairs. `Migration(settings)` alone is the plain
    gateway: a fixed mode, no live judging, no policy."""

    def __init__(self, settings: GatewayConfig, store: Any = None, config: Any = None, *, replica: str | None = None):
        if config is not None and config.deploy.gateway != settings:  # command-line changes (--mode) reach every part
            config = config.model_copy(update={"deploy": config.deploy.model_copy(update={"gateway": settings})})
        self.settings, self.config = settings, config
        self.router = Router(settings.mode, settings.canary)
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.live_store = None
        self.judge = None
        self.snapshot: dict[str, Any] | None = None
        self.decisions: list[Any] = []
        self._machine = None
        self._cursor: float | None = None
        self._crash_seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        gw = settings
        if (gw.live_eval.enabled or gw.policy.enabled) and store is not None:
            from llamaduo.deploy.livestore import LiveStore

            self.live_store = LiveStore(store)
        if gw.live_eval.enabled:
            from llamaduo.deploy.live import JudgeProcess, check_judges

            if config is None:
                raise ValueError("live judging needs the project config (its judges and evaluate settings)")
            check_judges(config, gw.live_eval)
            self.judge = JudgeProcess(config, store.engine.url.render_as_string(hide_password=False))
        if gw.policy.enabled and gw.mode == "capture":
            from llamaduo.errors import ConfigError

            raise ConfigError("deploy.gateway.policy is enabled but the gateway starts in capture mode, where no local model answers",
                              "Start it in shadow mode (--mode shadow) with a local model at deploy.gateway.local.")

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.judge is not None:
            self.judge.start()
        if self.live_store is None:
            return
        if self.settings.policy.enabled:
            self.router.mode = self.live_store.start(self.settings.mode, self.replica)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="llamaduo-migration")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.judge is not None:
            self.judge.stop()
        if self.live_store is not None and self.settings.policy.enabled:
            self.live_store.drop_lease(self.replica)  # the next replica need not wait for the lease to run out

    # ---- hooks of the request path (never block) -----------------------------------------------

    def local_done(self, capture_id: str) -> None:
        """A shadow answer is stored: judge the pair if it is chosen."""
        if self.judge is not None and self.judge.chosen(capture_id):
            self.judge.offer(capture_id)

    def wants_reference(self, capture_id: str) -> bool:
        """A locally answered request chosen for judging needs the service's answer as its reference."""
        return self.judge is not None and self.settings.live_eval.reference_in_local and self.judge.chosen(capture_id)

    async def fetch_reference(self, service: Any, capture_id: str, payload: dict[str, Any], scrub) -> None:
        """Ask the service the same question in the background and keep its answer as the pair's reference."""
        import asyncio
        import json

        import httpx

        reference, reason = None, None
        try:
            resp = await service.open("/chat/completions", service.body(payload, stream=False, stream_options=None))
            body = await resp.aread()
            await resp.aclose()
            reference = json.loads(body) if resp.status_code == 200 else None
            reason = None if reference is not None else f"the service answered HTTP {resp.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            reason = f"the service reference failed ({type(exc).__name__})"
        if reference is None:
            await asyncio.to_thread(self.live_store.put_score, capture_id, "skipped", reason=reason, reference_from="service")
            return
        await asyncio.to_thread(self.live_store.put_score, capture_id, "pending", reference_from="service", reference=scrub(reference))
        self.judge.offer(capture_id)

    def collector(self):
        """A Prometheus collector over the last snapshot (refreshed by the background thread, never by a scrape)."""
        from llamaduo.deploy.livemetrics import prometheus

        migration = self

        class _Live:
            def collect(self):
                out = list(prometheus(migration.snapshot)) if migration.snapshot else []
                if migration.judge is not None:  # this replica's own counts, including pairs a full queue dropped
                    from prometheus_client.core import CounterMetricFamily

                    family = CounterMetricFamily("llamaduo_gateway_live_pairs", "Pairs offered to live judging here, by outcome", labels=["outcome"])
                    for outcome, count in dict(migration.judge.counts).items():
                        family.add_metric([outcome], count)
                    out.append(family)
                return out

        return _Live()

    # ---- the background turn -------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.turn()
            except Exception:  # a database hiccup must not end the loop; the next turn tries again
                log.exception("the migration loop's turn failed")
            self._stop.wait(self.settings.policy.interval_s)

    def turn(self, now: float | None = None) -> None:
        """One turn: follow the store's mode, note engine crashes, decide if this replica holds the lease, refresh metrics."""
        from llamaduo.deploy.livemetrics import snapshot

        store, policy = self.live_store, self.settings.policy
        now = time.time() if now is None else now
        if policy.enabled:
            mode, _ = store.current_mode()
            if mode is not None:
                self.router.mode = mode
            self._note_crashes()
            if store.take_lease(self.replica, policy.lease_s, now):
                self._decide(now)
            else:
                self._machine = None  # another replica decides; take up its history afresh if the lease comes back
        if self.config is not None:
            self.snapshot = snapshot(self.config, store, now)

    def _decide(self, now: float) -> None:
        from llamaduo.deploy.policy import PolicyMachine, items_from

        store, policy = self.live_store, self.settings.policy
        mode, since = store.current_mode()
        if self._machine is None or self._machine.mode != mode or (since is not None and self._machine.entered != since):
            # A fresh start, a lease taken over, or a manual change: the stage's evidence starts at its event.
            self._machine = PolicyMachine(policy, mode, since if since is not None else float("-inf"))
            self._cursor = since
            if since is not None:
                _, _, earlier = store.evidence(since - policy.crash_window_s, since)
                for item in items_from([], [], earlier):
                    self._machine.remember_crash(item)
        until = now - policy.settle_s
        if self._cursor is not None and until <= self._cursor:
            return
        requests, judged, crashes = store.evidence(self._cursor, until)
        for item in items_from(requests, judged, crashes):
            decision = self._machine.feed(item)
            if decision is None:
                continue
            evidence = {**decision.evidence, "decided_at": now, "replica": self.replica}
            store.add_event("transition", from_mode=decision.from_mode, to_mode=decision.to_mode, reason=decision.reason,
                            evidence=evidence, replica=self.replica, ts=decision.ts)
            log.warning("gateway mode %s -> %s: %s", decision.from_mode, decision.to_mode, decision.reason)
            self.router.mode = decision.to_mode
            self.decisions.append(decision)
        self._cursor = until

    def _note_crashes(self) -> None:
        """Record each crash of the local engine that serve's /health counts (a first look only sets the baseline)."""
        import httpx

        url = health_url(self.settings.local.base_url)
        try:
            body = httpx.get(url, timeout=2.0).json()
        except (httpx.HTTPError, ValueError):
            return  # down or not a llamaduo serve: its failures still show as fallbacks
        crashes = body.get("crashes") if isinstance(body, dict) else None
        if not isinstance(crashes, int):
            return
        seen = self._crash_seen.get(url)
        self._crash_seen[url] = crashes
        if seen is None or crashes < seen:  # first look, or serve itself restarted and counts from 0 again
            return
        for n in range(seen + 1, crashes + 1):
            self.live_store.add_event("engine_crash", reason=body.get("last_crash") or "the engine's worker process crashed",
                                      evidence={"url": url, "crashes": n, "restarts": body.get("restarts")}, replica=self.replica)
