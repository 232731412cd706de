"""The migration loop end to end: the fake service (also the judge) and the tiny model served by `serve`'s worker process.

A local model that agrees with the service goes shadow -> canary -> local by itself; a killed engine falls back with no
client error; the model swapped for a degraded one rolls back local -> canary -> shadow; the policy's dry-run replays
the same transitions; status --live, /metrics and the report show the live section.
"""

from __future__ import annotations

import os
import signal
import threading

import httpx

from tests.deploy.conftest import SERVE_KEY
from tests.deploy.migration_helpers import CLIENT_KEY, ServiceAndJudge, project_config, start_gateway, wait_until

PROMPTS = [f"Summarize the text about the fox number {i}." for i in range(10)]
POLICY = {"enabled": True, "target": {"precision.coverage@70": 0.6}, "promote_min_judged": 6, "rollback_min_judged": 4,
          "max_fallback_rate": 0.5, "fallback_min_attempts": 4, "max_crashes": 3, "interval_s": 0.2, "settle_s": 0.3, "lease_s": 5}


def engine(model, kind: str, **options):
    from llamaduo.infer.engines import EngineSpec
    from llamaduo.infer.engines.worker import WorkerEngine

    spec = EngineSpec(kind=kind, model=str(model), model_id="tiny", precision="fp32", options=options)
    return WorkerEngine(spec, hang_timeout_s=60, backoff_s=0.1)


def serve(engine_, port: int = 0):
    from llamaduo.deploy.config import ServeConfig
    from llamaduo.deploy.server import create_app
    from llamaduo.deploy.serving import BackgroundServer

    settings = ServeConfig(max_tokens=64, concurrency=1, queue_size=64, timeout_s=60)
    return BackgroundServer(create_app(engine_, settings, {SERVE_KEY: "gateway"}), port=port).start()


def chat(url: str, prompt: str, key: str, max_tokens: int = 6) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


class Traffic:
    """The application: one request at a time through the gateway, each waited on until its live judgment is stored."""

    def __init__(self, gateway, migration):
        self.gateway, self.migration, self.sent, self.answered_by = gateway, migration, 0, []

    def mode(self) -> str:
        return httpx.get(f"{self.gateway.url}/health").json()["mode"]

    def one(self, prompt: str, max_tokens: int = 6) -> httpx.Response:
        mode = self.mode()
        reply = chat(self.gateway.url, prompt, CLIENT_KEY, max_tokens)
        assert reply.status_code == 200, reply.text  # never a client error, whatever the local model does
        assert reply.json()["choices"][0]["message"]["content"] is not None
        self.sent += 1
        self.answered_by.append(reply.headers["x-llamaduo-answered-by"])
        judged = not (mode == "local" and reply.headers.get("x-llamaduo-fallback-reason"))
        if judged:  # its pair is judged (a local answer against the service's reference, or a shadow pair)
            capture_id = reply.headers["x-llamaduo-capture-id"]
            assert wait_until(lambda: self._settled(capture_id), 60)
        return reply

    def _settled(self, capture_id: str) -> bool:
        s = self.migration.live_store.scores
        with self.migration.live_store.engine.connect() as conn:
            row = conn.execute(s.select().where(s.c.capture_id == capture_id)).first()
        return row is not None and row.status != "pending"

    def until(self, mode: str, cap: int) -> int:
        """Send requests until the gateway's mode is `mode` (the policy decides in the background); returns how many."""
        for i in range(cap):
            if wait_until(lambda: self.mode() == mode, 0.8 if i else 0.1):
                return i
            self.one(PROMPTS[self.sent % len(PROMPTS)])
        assert wait_until(lambda: self.mode() == mode, 5), f"still {self.mode()} after {cap} requests, expected {mode}"
        return cap


def transitions(migration) -> list[tuple[str, str]]:
    return [(e["from_mode"], e["to_mode"]) for e in migration.live_store.events_list(("transition",))]


def test_shadow_to_local_by_itself_then_rollback_of_a_degraded_model(tmp_path, monkeypatch, fake_service, tiny_model, cli):
    # ignore_eos: every answer runs to max_tokens, so the request killed below is surely still generating.
    good = engine(tiny_model, "tests.deploy.slow_engine:SlowEngine", token_delay_s=0.02, ignore_eos=True)
    degraded = engine(tiny_model, "tests.deploy.degraded_engine:DegradedEngine")
    local = serve(good)
    port = local.port
    # The service answers as the good local model does (greedy): agreeing models are what the judge rewards.
    answers = {p: chat(local.url, p, SERVE_KEY).json()["choices"][0]["message"]["content"] for p in PROMPTS}
    fake_service.responder = ServiceAndJudge(answers)
    config = project_config(tmp_path, fake_service, monkeypatch, f"{local.url}/v1", gateway={
        "mode": "shadow", "canary": {"share": 0.5}, "policy": POLICY,
        "live_eval": {"enabled": True, "share": 1.0, "daily_budget_usd": 1.0, "window": 50}})
    gateway, store, migration = start_gateway(config)
    traffic = Traffic(gateway, migration)
    try:
        # 1. shadow -> canary -> local, step by step, on live scores alone.
        assert traffic.until("canary", 30) >= 6
        canary_from = len(traffic.answered_by)
        traffic.until("local", 40)
        assert {"local", "service"} <= set(traffic.answered_by[canary_from:])  # canary split the traffic
        assert transitions(migration) == [("shadow", "canary"), ("canary", "local")]
        assert traffic.one(PROMPTS[0]).headers["x-llamaduo-answered-by"] == "local"

        # 2. A killed engine: the request in flight is answered by the service, the client sees no error.
        result = {}
        thread = threading.Thread(target=lambda: result.update(reply=chat(gateway.url, "Write a long story.", CLIENT_KEY, 60)))
        thread.start()
        assert wait_until(lambda: good._pending, 30)
        os.kill(good.describe()["worker_pid"], signal.SIGKILL)
        thread.join(60)
        reply = result["reply"]
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
        assert reply.headers["x-llamaduo-answered-by"] == "service"
        assert reply.headers["x-llamaduo-fallback-reason"] == "local answered HTTP 503"
        assert wait_until(lambda: good.ready, 60)
        assert wait_until(lambda: migration.live_store.events_list(("engine_crash",)), 10)  # seen through serve's /health
        assert traffic.mode() == "local"  # one crash is not "repeatedly"

        # 3. The model is swapped for a degraded one: low live scores roll it back, one step at a time.
        local.stop()
        local = serve(degraded, port=port)
        traffic.until("shadow", 40)
        assert transitions(migration) == [("shadow", "canary"), ("canary", "local"), ("local", "canary"), ("canary", "shadow")]
        events = migration.live_store.events_list(("transition",))
        promote = events[0]["evidence"]["scores"]["targets"]["precision.coverage@70"]
        assert promote["n"] >= 6 and promote["bound"] >= 0.6 and events[0]["reason"].startswith("live scores meet the target")
        assert all(e["reason"].startswith("live scores below target") for e in events[2:])
        assert events[2]["evidence"]["scores"]["targets"]["precision.coverage@70"]["bound"] < 0.6

        # 4. The dry-run replays the stored history into the same transitions.
        from llamaduo.deploy.policy import replay

        decisions, recorded = replay(migration.live_store, config.deploy.gateway.policy, "shadow")
        assert [(d.from_mode, d.to_mode) for d in decisions] == transitions(migration)
        assert [d.reason for d in decisions] == [e["reason"] for e in recorded]
        code, out, _ = cli("gateway", "--dry-run-policy", "--config", str(tmp_path / "llamaduo.yaml"))
        assert code == 0 and "the replay makes the 4 recorded transition(s), in the same order" in out
        assert out.count("would: ") == 4 and "shadow -> canary" in out and "canary -> shadow" in out

        # 5. The live views: status --live, /metrics, and the report's section.
        assert wait_until(lambda: (migration.snapshot or {}).get("mode") == "shadow", 10)  # the background turn's snapshot
        code, out, _ = cli("status", "--live", "--config", str(tmp_path / "llamaduo.yaml"))
        assert code == 0 and "mode: shadow (policy on" in out and "95% CI" in out and "fallback rate" in out
        assert "judge spend (ledger, stage live_eval)" in out and "service: error rate 0.0%" in out
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert 'llamaduo_gateway_mode{mode="shadow"} 1.0' in metrics
        assert 'llamaduo_gateway_live_score{bound="ci_high",metric="precision",stat="coverage@70"}' in metrics
        assert 'llamaduo_gateway_window_latency_ms{quantile="p99",upstream="service"}' in metrics
    finally:
        gateway.stop()
        store.close()
        local.stop()
        good.close()
        degraded.close()

    from llamaduo.report.api import build_report
    from tests.report.runfixture import make_run

    make_run(config, iterations=1)
    result = build_report(config)
    markdown = open(result.markdown_path, encoding="utf-8").read()
    assert "## Live traffic (gateway)" in markdown and "- mode: shadow" in markdown and "precision: n=" in markdown
    assert '<section id="live">' in open(result.html_path, encoding="utf-8").read()
