"""Live judging through the gateway against the fake service (which is also the judge): its share and its daily budget,
counted at the fake server; canary routing; and the decision-maker's lease on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import httpx
import pytest

from llamaduo.deploy.canary import Router
from llamaduo.deploy.live import chosen
from llamaduo.deploy.migration_config import CanaryConfig
from tests.deploy.migration_helpers import (
    CLIENT_KEY, ServiceAndJudge, judge_requests, live_rows, project_config, start_gateway, wait_until,
)
from tests.deploy.postgres import postgres_server


def ask(server, prompt: str) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": 3, "temperature": 0}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply


def ask_shadowed(server, store, prompt: str) -> str:
    """One request, then wait for its shadow answer: the session's tiny serve queues only 8 and would answer 429."""
    capture_id = ask(server, prompt).headers["x-llamaduo-capture-id"]
    assert wait_until(lambda: any(r["id"] == capture_id and r["local_response"] is not None for r in store.rows()), 60)
    return capture_id


def settled(migration, expected: int) -> bool:
    return len([r for r in live_rows(migration) if r["status"] != "pending"]) >= expected


def ledger_live(config) -> tuple[int, float]:
    import sqlite3

    with sqlite3.connect(config.path(config.service.cache_path)) as conn:
        requests, usd = conn.execute("SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(cost_usd), 0) FROM ledger WHERE stage = 'live_eval'").fetchone()
    return requests, usd


def test_a_share_of_shadow_pairs_is_judged_with_evals_rubric_and_repeats(tmp_path, monkeypatch, fake_service, serve_url):
    fake_service.responder = ServiceAndJudge()
    config = project_config(tmp_path, fake_service, monkeypatch, f"{serve_url}/v1",
                            gateway={"mode": "shadow", "live_eval": {"enabled": True, "share": 0.5, "daily_budget_usd": None}})
    server, store, migration = start_gateway(config)
    try:
        ids = [ask_shadowed(server, store, f"Summarize document number {i}.") for i in range(24)]
        picked = [i for i in ids if chosen(i, 0.5)]
        assert wait_until(lambda: settled(migration, len(picked)), 120)
        rows = {r["capture_id"]: r for r in live_rows(migration)}
        assert set(rows) == set(picked)  # exactly the chosen pairs, nothing else
        assert all(r["status"] == "judged" and r["scores"]["precision"] in (10.0, 90.0) for r in rows.values())
        asked = judge_requests(fake_service)
        assert len(asked) == len(picked)  # one request per pair and judge, counted at the server
        assert all(r.json["n"] == 2 for r in asked)  # evaluate.repeats, as `llamaduo eval` asks
        assert all("<<<CANDIDATE>>>" in r.json["messages"][-1]["content"] for r in asked)  # eval's pointwise rubric
        requests, usd = ledger_live(config)
        assert requests == len(picked) and usd == pytest.approx(sum(r["cost_usd"] for r in rows.values()))
        joined = migration.live_store.judged_rows()
        assert {r["id"] for r in joined} == set(picked) and all(r["local_response"] for r in joined)
    finally:
        server.stop()
        store.close()


def test_the_daily_budget_stops_live_judging_and_never_the_requests(tmp_path, monkeypatch, fake_service, serve_url):
    fake_service.responder = ServiceAndJudge()
    budget = 0.002  # a worst case of ~$0.0014 a pair (1024 output tokens x 2) against ~$0.0001 spent: a handful of pairs
    config = project_config(tmp_path, fake_service, monkeypatch, f"{serve_url}/v1",
                            gateway={"mode": "shadow", "live_eval": {"enabled": True, "share": 1.0, "daily_budget_usd": budget}})
    server, store, migration = start_gateway(config)
    try:
        for i in range(15):
            ask_shadowed(server, store, f"Classify review {i} as positive or negative.")
        assert wait_until(lambda: settled(migration, 15), 120)
        rows = live_rows(migration)
        judged = [r for r in rows if r["status"] == "judged"]
        skipped = [r for r in rows if r["status"] == "skipped"]
        assert judged and skipped and len(judged) + len(skipped) == 15
        assert all("daily live-judging budget" in r["reason"] for r in skipped)
        assert len(judge_requests(fake_service)) == len(judged)
        spent = sum(r["cost_usd"] for r in rows)
        assert 0 < spent <= budget
        assert ledger_live(config)[1] == pytest.approx(spent)
        snap_text = "\n".join(_status_lines(config))
        assert "judge spend (ledger, stage live_eval)" in snap_text and f"${spent:.4f} today of ${budget:.2f} a day" in snap_text
    finally:
        server.stop()
        store.close()


def _status_lines(config):
    from llamaduo.deploy.gateway_run import open_store
    from llamaduo.deploy.livemetrics import lines, snapshot
    from llamaduo.deploy.livestore import LiveStore

    store = open_store(config.deploy.gateway, config.workdir)
    try:
        return lines(snapshot(config, LiveStore(store)))
    finally:
        store.close()


def test_live_judging_refuses_to_start_without_a_usable_judge(tmp_path, monkeypatch, fake_service):
    from llamaduo.errors import LlamaduoError

    config = project_config(tmp_path, fake_service, monkeypatch, "http://127.0.0.1:9/v1",
                            gateway={"mode": "shadow", "live_eval": {"enabled": True}}, evaluate={"judge": False})
    with pytest.raises(LlamaduoError, match="needs a judge"):
        start_gateway(config)
    config = project_config(tmp_path, fake_service, monkeypatch, "http://127.0.0.1:9/v1", gateway={"mode": "capture", "policy": {"enabled": True}})
    with pytest.raises(LlamaduoError, match="capture mode"):
        start_gateway(config)


def test_canary_routing_share_and_stickiness():
    payload = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "first"}]}
    loose = Router("canary", CanaryConfig(share=0.3), random.Random(0))
    share = sum(loose.answer_locally(payload, "c") for _ in range(4000)) / 4000
    assert 0.27 < share < 0.33
    by_client = Router("canary", CanaryConfig(share=0.5, sticky="client"))
    for client in ("a", "b", "c", "d"):
        assert len({by_client.answer_locally({"messages": [{"role": "user", "content": str(i)}]}, client) for i in range(20)}) == 1
    clients = [f"app{i}" for i in range(400)]
    assert 0.4 < sum(by_client.answer_locally(payload, c) for c in clients) / 400 < 0.6
    by_chat = Router("canary", CanaryConfig(share=0.5, sticky="conversation"))
    later = {"messages": payload["messages"] + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "second"}]}
    assert all(by_chat.answer_locally(later, "c") == by_chat.answer_locally(payload, "c") for _ in range(5))
    assert len({by_chat.answer_locally(payload, "c", f"conv-{i}") for i in range(40)}) == 2  # the header names conversations
    assert Router("local", CanaryConfig(share=0.0)).answer_locally(payload, "c")
    assert not Router("shadow", CanaryConfig(share=1.0)).answer_locally(payload, "c")


def lease_checks(url: str) -> None:
    from llamaduo.deploy.capture import CaptureStore
    from llamaduo.deploy.livestore import LiveStore

    a_store, b_store = CaptureStore(url), CaptureStore(url)
    try:
        a, b = LiveStore(a_store), LiveStore(b_store)
        assert a.take_lease("a", 30, now=1000) and not b.take_lease("b", 30, now=1001)
        assert a.take_lease("a", 30, now=1010)  # renewed
        assert not b.take_lease("b", 30, now=1039) and b.take_lease("b", 30, now=1041)  # a stopped renewing
        assert b.lease_holder()[0] == "b" and not a.take_lease("a", 30, now=1042)
        b.drop_lease("b")
        assert a.take_lease("a", 30, now=1043)
        assert a.start("shadow", "a") == "shadow" and b.start("local", "b") == "shadow"  # the first start wins
    finally:
        a_store.close()
        b_store.close()


def test_one_decision_maker_at_a_time_on_sqlite(tmp_path):
    lease_checks(f"sqlite:///{tmp_path / 'cap.sqlite'}")


def test_one_decision_maker_at_a_time_on_postgresql(tmp_path):
    try:
        with postgres_server(tmp_path) as url:
            lease_checks(url)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def replicas_checks(url: str, tmp_path) -> None:
    """Two gateway replicas on one store: one decides, the other follows the mode; the second takes over when the
    first stops, carrying on from the stage the first reached."""
    import time

    from llamaduo.deploy.capture import CaptureStore
    from llamaduo.deploy.config import GatewayConfig
    from llamaduo.deploy.migration import Migration

    policy = {"enabled": True, "target": {"precision.coverage@70": 0.6}, "promote_min_judged": 6, "rollback_min_judged": 4,
              "settle_s": 0, "interval_s": 60, "lease_s": 30}
    settings = GatewayConfig(mode="shadow", store_url=url, local={"base_url": "http://127.0.0.1:9/v1"}, policy=policy)
    stores = [CaptureStore(url), CaptureStore(url)]
    a, b = (Migration(settings, s, replica=name) for s, name in zip(stores, ("replica-a", "replica-b"), strict=True))
    a.live_store.start("shadow", "replica-a")
    b.live_store.start("shadow", "replica-b")

    def judged_pairs(score: float, n: int) -> None:
        for _ in range(n):
            cid = stores[0].add(client="app", mode="shadow", answered_by="service", model="m", request={}, response={}, status=200, latency_ms=1.0)
            a.live_store.put_score(cid, "judged", scores={"precision": score})
            time.sleep(0.002)  # distinct timestamps: the evidence has a strict order

    try:
        judged_pairs(90, 6)
        a.turn(time.time() + 1)
        b.turn(time.time() + 1)
        assert a.router.mode == "canary" and b.router.mode == "canary"  # b follows a's decision
        assert [d.to_mode for d in a.decisions] == ["canary"] and b.decisions == []  # only the lease holder decided
        judged_pairs(10, 4)
        b.turn(time.time() + 1)
        assert b.decisions == [] and b.router.mode == "canary"  # still a's lease
        a.stop()  # hands the lease back
        b.turn(time.time() + 1)
        assert [(d.from_mode, d.to_mode) for d in b.decisions] == [("canary", "shadow")]
        events = b.live_store.events_list(("transition",))
        assert [(e["replica"], e["to_mode"]) for e in events] == [("replica-a", "canary"), ("replica-b", "shadow")]
    finally:
        for s in stores:
            s.close()


def test_replicas_share_one_decision_maker_on_sqlite(tmp_path):
    replicas_checks(f"sqlite:///{tmp_path / 'cap.sqlite'}", tmp_path)


def test_replicas_share_one_decision_maker_on_postgresql(tmp_path):
    try:
        with postgres_server(tmp_path) as url:
            replicas_checks(url, tmp_path)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_live_views_without_a_capture_store_say_so_and_create_nothing(tmp_path, cli):
    from llamaduo.config import load_config
    from llamaduo.deploy.livemetrics import report_section

    code, _, err = cli("status", "--live", cwd=tmp_path)
    assert code == 2 and "no capture store" in err and "llamaduo gateway" in err
    assert report_section(load_config(data={"project": {"workdir": str(tmp_path)}})) is None
    assert not (tmp_path / ".llamaduo").exists()
    code, _, err = cli("gateway", "--set-mode", "local", cwd=tmp_path)
    assert code == 2 and "only a gateway with deploy.gateway.policy.enabled follows" in err
    code, _, err = cli("gateway", "--set-mode", "bogus", "--set", "deploy.gateway.policy.enabled=true", cwd=tmp_path)
    assert code == 2 and "Use one of shadow, canary, local" in err


def test_a_manual_mode_change_is_followed_and_replayed(tmp_path, cli):
    import time

    import yaml

    from llamaduo.config import load_config
    from llamaduo.deploy.capture import CaptureStore, resolve_store_url
    from llamaduo.deploy.migration import Migration
    from llamaduo.deploy.policy import replay

    data = {"project": {"workdir": str(tmp_path)}, "deploy": {"gateway": {"mode": "shadow", "policy": {
        "enabled": True, "target": {"precision.coverage@70": 0.6}, "promote_min_judged": 6, "settle_s": 0}}}}
    (tmp_path / "llamaduo.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "llamaduo.yaml")
    store = CaptureStore(resolve_store_url(config.deploy.gateway.store_url, tmp_path))
    try:
        migration = Migration(config.deploy.gateway, store, replica="r1")
        migration.live_store.start("shadow", "r1")
        code, out, err = cli("gateway", "--set-mode", "local", cwd=tmp_path)
        assert code == 0 and "mode shadow -> local" in out, err
        migration.turn(time.time() + 1)
        assert migration.router.mode == "local" and migration.decisions == []
        (event,) = migration.live_store.events_list(("manual",))
        assert event["from_mode"] == "shadow" and event["to_mode"] == "local" and event["reason"].startswith("set by hand by ")
        for _ in range(6):  # judged pairs after the manual change: the policy may not promote past local, nor roll back
            cid = store.add(client="a", mode="local", answered_by="local", model="m", request={}, response={}, status=200, latency_ms=1.0)
            migration.live_store.put_score(cid, "judged", scores={"precision": 95})
        migration.turn(time.time() + 1)
        assert migration.decisions == [] and replay(migration.live_store, config.deploy.gateway.policy, "shadow")[0] == []
    finally:
        store.close()
