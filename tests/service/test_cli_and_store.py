"""`llamaduo cache` and `llamaduo cost`, and the service database shared by several processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from llamaduo.cli.app import app
from llamaduo.errors import LlamaduoError
from llamaduo.runs import RunFolder
from llamaduo.service import open_service, run_sync
from llamaduo.service.cache import GroupCommit, ServiceStore
from llamaduo.service.types import Usage
from tests.fakes import FakeServiceServer
from tests.fakes.fixtures import FAKE_KEY

runner = CliRunner()


def _project(server: FakeServiceServer, tmp_path: Path) -> Path:
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": server.openai_base_url, "api_key_env": "FAKE_SERVICE_KEY"}
    path = tmp_path / "llamaduo.yaml"
    path.write_text(yaml.safe_dump({"service": {"generator": role, "judge": [role]}}))
    return path


async def _spend(config: Any, run: RunFolder) -> None:
    async with open_service(config, "generator", run=run) as gen, open_service(config, "judge", run=run) as judge:
        await gen.chat([{"role": "user", "content": "write a question"}], stage="synth")
        await judge.chat_samples([{"role": "user", "content": "judge it"}], n=2, stage="evaluate")
        await gen.chat([{"role": "user", "content": "write a question"}], stage="synth")  # a cache hit


def test_cost_and_cache_commands(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamaduo.config import load_config

    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    cfg_path = _project(fake_service, tmp_path)
    config = load_config(cfg_path)
    run = RunFolder.create(tmp_path / "runs", config, run_id="run-1")
    run_sync(_spend(config, run))

    by_stage = json.loads(runner.invoke(app, ["cost", "-c", str(cfg_path), "--json"]).output)
    rows = {r["stage"]: r for r in by_stage["rows"]}
    assert rows["synth"]["requests"] == 1 and rows["synth"]["cache_hits"] == 1 and rows["evaluate"]["requests"] == 1
    assert by_stage["total_usd"] > 0
    by_role = json.loads(runner.invoke(app, ["cost", "-c", str(cfg_path), "--run", "run-1", "--by", "role", "--json"]).output)
    assert {r["role"] for r in by_role["rows"]} == {"generator", "judge"}
    by_model = json.loads(runner.invoke(app, ["cost", "-c", str(cfg_path), "--by", "model", "--json"]).output)
    assert [r["model"] for r in by_model["rows"]] == ["openai/gpt-4o-mini"]
    table = runner.invoke(app, ["cost", "-c", str(cfg_path), "--by", "model"])
    assert table.exit_code == 0 and "total" in table.output and "spend" in table.output
    assert isinstance(runner.invoke(app, ["cost", "-c", str(cfg_path), "--by", "colour"]).exception, LlamaduoError)
    assert isinstance(runner.invoke(app, ["cost", "-c", str(cfg_path), "--run", "nope"]).exception, LlamaduoError)

    stats = json.loads(runner.invoke(app, ["cache", "stats", "-c", str(cfg_path), "--json"]).output)
    assert stats["entries"] == 3 and stats["by_model"][0]["model"] == "gpt-4o-mini"
    assert runner.invoke(app, ["cache", "stats", "-c", str(cfg_path)]).exit_code == 0
    cleared = runner.invoke(app, ["cache", "clear", "-c", str(cfg_path), "--yes"])
    assert cleared.exit_code == 0 and "removed 3" in cleared.output
    assert json.loads(runner.invoke(app, ["cache", "stats", "-c", str(cfg_path), "--json"]).output)["entries"] == 0
    # The ledger of money already spent survives clearing the cache.
    assert json.loads(runner.invoke(app, ["cost", "-c", str(cfg_path), "--json"]).output)["total_usd"] == by_stage["total_usd"]


@pytest.mark.parametrize("command", [["cache", "--help"], ["cache", "stats", "--help"], ["cache", "clear", "--help"], ["cost", "--help"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 0 and "Usage" in result.output


WRITER = """
import sys
from llamaduo.service.cache import ServiceStore
from llamaduo.service.types import Usage
store = ServiceStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.record([(f"k{sys.argv[2]}-{i}", "openai", "m", "text", "stop", Usage(input_tokens=1))], {"stage": "s", "cost_usd": 0.001})
store.close()
"""


def test_store_is_safe_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.sqlite")
    ServiceStore(path).close()
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, path, str(w), "150"]) for w in range(3)]
    assert [w.wait(60) for w in workers] == [0, 0, 0]
    store = ServiceStore(path)
    assert store.stats()["entries"] == 450 and store.total_cost() == pytest.approx(0.45)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


class CountingStore(ServiceStore):
    def __init__(self, path: Path):
        super().__init__(path)
        self.transactions = 0

    def record_many(self, writes: list[Any]) -> None:
        self.transactions += 1
        super().record_many(writes)


def test_replies_finishing_together_share_one_commit_and_a_cancelled_caller_is_still_written(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "service.sqlite")
    writes = GroupCommit(store)

    def reply(i: int) -> list[Any]:
        return [(f"key{i}", "openai", "gpt-4o-mini", f"text {i}", "stop", Usage(input_tokens=3, output_tokens=2))]

    async def main() -> None:
        await asyncio.gather(*(writes.record(reply(i), {"cost_usd": 0.001}) for i in range(10)))
        assert store.transactions == 1
        late = asyncio.ensure_future(writes.record(reply(10), {"cost_usd": 0.001}))
        await asyncio.sleep(0)  # it is waiting for the commit now
        late.cancel()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert store.transactions == 2 and store.stats()["entries"] == 11 and store.total_cost() == pytest.approx(0.011)
    assert store.get("key10") is not None and store.get("key10").text == "text 10"
    store.close()


def test_config_check_probes_every_role_and_names_the_broken_one(fake_service: FakeServiceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    cfg_path = _project(fake_service, tmp_path)

    def check(*extra: str) -> tuple[int, str, str]:
        return cli("config", "check", "-c", str(cfg_path), *extra)

    code, out, err = check()
    assert code == 0 and out.count("ok ") == 2 and err == ""
    probes = fake_service.received("openai.chat")
    assert len(probes) == 2 and probes[0].json["response_format"]["type"] == "json_schema"
    code, out, _ = check()  # the cache is skipped: a cached answer would prove nothing about the server today
    assert code == 0 and fake_service.count("openai.chat") == 4
    store = ServiceStore(tmp_path / ".llamaduo" / "cache.sqlite")
    assert store.stats()["entries"] == 0 and store.conn.execute("SELECT COUNT(*) FROM ledger WHERE stage = 'check'").fetchone()[0] == 4
    store.close()

    code, out, err = check("--set", f"service.judge.0.base_url={dead}", "--set", "service.judge.0.limits.max_retries=0")
    assert code == 2 and "judge.0" in out and "could not connect" in out and "base_url" in out
    assert err.count("\n") == 1 and "1 of 2 service roles failed the check (judge.0)" in err and "Traceback" not in err


def test_a_failed_first_contact_leaves_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1", "limits": {"max_retries": 0}}
    cfg_path = tmp_path / "llamaduo.yaml"
    cfg_path.write_text(yaml.safe_dump({"service": {"generator": role, "judge": [role]}}))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used-anywhere-0000")
    result = runner.invoke(app, ["config", "check", "-c", str(cfg_path)])
    assert isinstance(result.exception, LlamaduoError) and "could not connect" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llamaduo.yaml"], "no cache database for a project that never got a reply"
