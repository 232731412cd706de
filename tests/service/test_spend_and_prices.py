"""Unpriced means unknown, not free: budgets refuse unpriced models, ledger rows say `priced`, and carry the iteration."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamaduo.errors import ConfigError
from llamaduo.report.spend import spend_by_stage
from llamaduo.service import open_service
from llamaduo.service.budget import forget_budgets
from llamaduo.service.cache import ServiceStore
from llamaduo.service.ledger import spend
from tests.fakes import FakeServiceServer
from tests.fakes.fixtures import FAKE_KEY, fake_config

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    forget_budgets()


class AtIteration:
    """What the loop hands the service layer: a run id and the iteration its spend belongs to."""

    def __init__(self, run_id: str, iteration: int):
        self.run_id, self.iteration = run_id, iteration

    def event(self, *args: Any, **kwargs: Any) -> None:
        pass


def ask(config: Any, run: Any = None, content: str = "Say hello.") -> None:
    async def main() -> None:
        async with open_service(config, "generator", run=run) as client:
            await client.chat([{"role": "user", "content": content}])

    asyncio.run(main())


def ledger(config: Any) -> list[tuple[Any, ...]]:
    store = ServiceStore(config.path(config.service.cache_path))
    try:
        return store.conn.execute("SELECT run_id, iteration, model, cost_usd, priced FROM ledger ORDER BY id").fetchall()
    finally:
        store.close()


def test_an_unpriced_model_under_a_budget_is_refused_before_any_request(fake_service: FakeServiceServer, tmp_path: Path) -> None:
    config = fake_config(fake_service, tmp_path, model="my-own-model", budget_usd=1.0)
    with pytest.raises(ConfigError) as info:
        ask(config)
    assert "service.generator uses model my-own-model, which has no known price" in info.value.problem
    assert "service.prices.my-own-model" in info.value.fix and "free: true" in info.value.fix
    assert fake_service.count("openai.chat") == 0 and not config.path(config.service.cache_path).exists()


def test_config_check_names_the_unpriced_role(fake_service: FakeServiceServer, tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "llamaduo.yaml"
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": fake_service.openai_base_url, "api_key_env": "FAKE_SERVICE_KEY"}
    path.write_text(yaml.safe_dump({"service": {"generator": role, "judge": [{**role, "model": "my-judge"}], "budget_usd": 5}}))
    code, out, err = cli("config", "check", "-c", str(path))
    assert code == 2 and "judge.0" in out and "service.prices.my-judge" in out
    assert "1 of 2 service roles failed the check (judge.0)" in err
    assert fake_service.count("openai.chat") == 1  # the priced generator was probed; the unpriced judge never


def test_a_model_marked_free_needs_no_price_and_costs_nothing(fake_service: FakeServiceServer, tmp_path: Path) -> None:
    config = fake_config(fake_service, tmp_path, model="my-own-model", budget_usd=1.0, role={"free": True})
    ask(config)
    assert ledger(config) == [(None, None, "my-own-model", 0.0, 1)]


def test_unpriced_calls_are_recorded_as_unpriced_and_shown_apart(fake_service: FakeServiceServer, tmp_path: Path, cli: Any) -> None:
    config = fake_config(fake_service, tmp_path, model="my-own-model")
    ask(config, AtIteration("run-a", 2))
    assert ledger(config) == [("run-a", 2, "my-own-model", 0.0, 0)]
    store = ServiceStore(config.path(config.service.cache_path))
    assert [(r["iteration"], r["unpriced_requests"]) for r in spend(store, run="run-a", by="iteration")] == [(2, 1)]
    store.close()
    assert [r.unpriced_requests for r in spend_by_stage(config.path(config.service.cache_path), "run-a")] == [1]
    path = tmp_path / "llamaduo.yaml"
    path.write_text(yaml.safe_dump({"project": {"workdir": str(tmp_path)}}))
    code, out, _ = cli("cost", "-c", str(path), "--run", "run-a", "--json")
    assert code == 0 and json.loads(out)["unpriced_requests"] == 1
    code, out, _ = cli("cost", "-c", str(path), "--run", "run-a")
    assert code == 0 and "unpriced" in out and "1 paid requests went to models without a known price" in out


def test_ledger_rows_carry_run_and_iteration(fake_service: FakeServiceServer, tmp_path: Path, cli: Any) -> None:
    config = fake_config(fake_service, tmp_path)
    ask(config, AtIteration("run-b", 1), "one")
    ask(config, AtIteration("run-b", 2), "two")
    ask(config, AtIteration("run-b", 2), "three")
    rows = ledger(config)
    assert [(r[0], r[1], r[4]) for r in rows] == [("run-b", 1, 1), ("run-b", 2, 1), ("run-b", 2, 1)] and all(r[3] > 0 for r in rows)
    path = tmp_path / "llamaduo.yaml"
    path.write_text(yaml.safe_dump({"project": {"workdir": str(tmp_path)}}))
    code, out, _ = cli("cost", "-c", str(path), "--run", "run-b", "--by", "iteration", "--json")
    shown = {r["iteration"]: r["cost_usd"] for r in json.loads(out)["rows"]}
    assert code == 0 and shown == {1: pytest.approx(rows[0][3]), 2: pytest.approx(rows[1][3] + rows[2][3])}


def test_a_ledger_from_before_iterations_and_prices_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, stage TEXT, role TEXT, provider TEXT,"
        " model TEXT, input_tokens INTEGER NOT NULL DEFAULT 0, cached_input_tokens INTEGER NOT NULL DEFAULT 0,"
        " output_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, cache_hit INTEGER NOT NULL DEFAULT 0,"
        " batch INTEGER NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 1);"
        "INSERT INTO ledger (ts, run_id, stage, model, cost_usd) VALUES (1, 'old', 'evaluate', 'gpt-4o', 0.25);"
    )
    old.commit()
    old.close()
    # A report reads it as it is (read-only), then the service layer adds the new columns when it opens it.
    assert [(r.iteration, r.cost_usd, r.unpriced_requests) for r in spend_by_stage(path, "old")] == [(None, 0.25, 0)]
    store = ServiceStore(path)
    store.add_ledger({"run_id": "old", "iteration": 3, "stage": "synth", "cost_usd": 0.5, "priced": True})
    assert [(r["iteration"], r["cost_usd"]) for r in spend(store, run="old", by="iteration")] == [(3, 0.5), (None, 0.25)]
    store.close()
