"""Every figure the loop shows is the measured one: spend equals the ledger's sum wherever it is shown, and a run
whose judge or generator measured nothing stops, says so, and exits non-zero."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamaduo.errors import ConfigError
from llamaduo.loop.outcome import NotMeasured, void_evaluation
from llamaduo.loop.pipeline import Pipeline
from llamaduo.loop.state import LoopState
from tests.fakes import FakeServiceServer
from tests.fakes.fixtures import FAKE_KEY
from tests.fakes.loop_service import LoopService as Service
from tests.loop.project import loop_config

# A price far above the real one, so that every call moves the 4-decimal figures the views print.
DEAR = {"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def ledger_sums(project: Path, run_id: str) -> tuple[float, dict[int | None, float], dict[str, float]]:
    """The run's total, per iteration and per stage, summed by SQLite straight from the ledger table."""
    db = sqlite3.connect(project / ".llamaduo" / "cache.sqlite")
    try:
        total = db.execute("SELECT SUM(cost_usd) FROM ledger WHERE run_id = ?", (run_id,)).fetchone()[0]
        per_iteration = dict(db.execute("SELECT iteration, SUM(cost_usd) FROM ledger WHERE run_id = ? GROUP BY iteration", (run_id,)))
        per_stage = dict(db.execute("SELECT stage, SUM(cost_usd) FROM ledger WHERE run_id = ? GROUP BY stage", (run_id,)))
        roles = {r for (r,) in db.execute("SELECT DISTINCT role FROM ledger WHERE run_id = ? AND stage = 'synth'", (run_id,))}
    finally:
        db.close()
    assert roles == {"generator", "judge"}  # the quality gate's judge calls are spend of the round too
    return total, per_iteration, per_stage


def row_cells(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.strip("│ ").startswith(label))
    return re.findall(r"\d+\.\d{4}", line)


def test_every_spend_figure_shown_is_the_ledger_sum(fake_service, tiny_model, tmp_path, cli):
    pytest.importorskip("mlflow", reason="the `mlflow` extra is not installed")
    pytest.importorskip("alembic", reason="MLflow's SQLite store needs alembic")
    fake_service.responder = Service()
    data = loop_config(tmp_path, fake_service.openai_base_url, tiny_model)
    data["service"]["prices"] = DEAR
    data["synth"]["min_quality"] = 5
    data["report"] = {"tracking": "mlflow"}
    config = write(tmp_path / "llamaduo.yaml", data)
    code, out, err = cli("run", str(config))
    assert code == 0, err
    total, per_iteration, per_stage = ledger_sums(tmp_path, "loop-test")
    assert set(per_iteration) == {0, 1, 2} and set(per_stage) == {"evaluate", "synth"}
    state = LoopState.load(tmp_path / "runs" / "loop-test")
    judged = {r.iteration: r for r in state.iterations}
    # Iteration 2 trained on the only synthetic round, so that round's generation and quality gate are its spend too
    # (its judging may be all cache hits, as iteration 1 gave the same answers): no longer the judge's cost alone.
    assert judged[2].spend_usd == pytest.approx(per_iteration[2]) and per_iteration[2] >= per_stage["synth"] > 0
    shown_per_iteration = [f"{per_iteration[k]:.4f}" for k in (0, 1, 2)]

    # llamaduo run: the iteration table and the spend lines
    assert row_cells(out, "service $") == shown_per_iteration
    assert all(f"spend {stage}: ${usd:.4f}" in out for stage, usd in per_stage.items()) and f"spend total: ${total:.4f}" in out
    # llamaduo status, as text and as JSON
    code, out, _ = cli("status", "-c", str(config))
    assert code == 0 and row_cells(out, "service $") == shown_per_iteration and f"spend ${total:.4f}" in out
    code, out, _ = cli("status", "-c", str(config), "--json")
    assert json.loads(out)["spend_usd"] == pytest.approx(total)
    # llamaduo cost --run: the reference the others must agree with
    code, out, _ = cli("cost", "-c", str(config), "--run", "loop-test", "--json")
    assert json.loads(out)["total_usd"] == pytest.approx(total)
    code, out, _ = cli("cost", "-c", str(config), "--run", "loop-test", "--by", "iteration", "--json")
    assert {r["iteration"]: r["cost_usd"] for r in json.loads(out)["rows"]} == pytest.approx(per_iteration)
    # llamaduo runs list / show / compare
    code, out, _ = cli("runs", "list", "-c", str(config), "--json")
    assert json.loads(out)["runs"][0]["spend_usd"] == pytest.approx(total)
    code, out, _ = cli("runs", "list", "-c", str(config))
    assert f"{total:.4f}" in out
    code, out, _ = cli("runs", "show", "loop-test", "-c", str(config))
    assert f"${total:.4f}" in out
    code, out, _ = cli("runs", "compare", "loop-test", "loop-test", "-c", str(config))
    assert row_cells(out, "service USD")[:2] == [f"{total:.4f}"] * 2
    # llamaduo report: the per-iteration column and the spend table's total, in Markdown and HTML
    code, out, err = cli("report", "-c", str(config))
    assert code == 0, err
    markdown = (tmp_path / "runs" / "loop-test" / "report" / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if re.match(r"\| (baseline|iteration \d)", line)]
    assert [re.findall(r"\d+\.\d{4}", line)[-1] for line in rows] == shown_per_iteration
    assert f"| total | | | | | | | {total:.4f} |" in markdown
    html = (tmp_path / "runs" / "loop-test" / "report" / "report.html").read_text()
    assert f'<th id="spend-total">{total:.4f}</th>' in html
    # MLflow: spend_usd per iteration
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.llamaduo/mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("llamaduo").experiment_id])[0]
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "spend_usd")}
    assert logged == pytest.approx({k: per_iteration[k] for k in (0, 1, 2)})
    # the model card written beside an export
    from llamaduo.config import load_config
    from llamaduo.deploy.modelcard import service_spend

    card = "\n".join(service_spend(load_config(config), "loop-test"))
    assert all(re.search(rf"\| {k} \| \d+ \| {per_iteration[k]:.4f} \|", card) for k in (0, 1, 2))
    assert re.search(rf"\| total \| \d+ \| {total:.4f} \|", card)


def refusing_server() -> tuple[str, int]:
    """The URL of the fake service once it has stopped: connections to it are refused."""
    server = FakeServiceServer().start()
    url, port = server.openai_base_url, server._port
    server.stop()
    return url, port


def test_a_judge_that_refuses_connections_stops_the_run_before_training(tiny_model, tmp_path, cli):
    url, port = refusing_server()
    config = write(tmp_path / "llamaduo.yaml", loop_config(tmp_path, url, tiny_model, max_iterations=1))
    code, out, err = cli("run", str(config))
    error = err.strip().splitlines()[-1]  # above it: the model loader's progress bars
    assert code == 2 and error.startswith("error: not measured") and err.count("error:") == 1 and "Traceback" not in err
    assert f"judge0 (openai/gpt-4o-mini at {url}) could not be reached, so all 8 judgments of the base model (iteration 0) failed" in err
    assert "`llamaduo config check`" in err and "rerun the same command" in err
    assert "not measured" in out and "rouge_l.mean" in out  # the judge-free metrics were still measured and shown
    state = LoopState.load(tmp_path / "runs" / "loop-test")
    assert (state.status, state.stop_reason) == ("failed", "not_measured") and "could not be reached" in state.problem
    assert "iter1.train" not in state.steps and "iter0.eval" not in state.steps

    code, out, _ = cli("status", "-c", str(config))
    assert code == 0 and "stop reason: not_measured" in out and "could not be reached" in out
    assert row_cells(out, "precision.mean") == [] and "not measured" in out
    code, out, _ = cli("runs", "list", "-c", str(config))
    assert "not measured" in out
    code, _, err = cli("report", "-c", str(config))
    markdown = (tmp_path / "runs" / "loop-test" / "report" / "report.md").read_text()
    assert code == 0 and "measured nothing usable" in markdown and "| not measured |" in markdown

    # The judge is back: the same command resumes, asks the failed judgments again, and finishes.
    with FakeServiceServer(port=port) as server:
        server.responder = Service(similarity=95, precision=95)
        code, out, err = cli("run", str(config))
        assert code == 0, err
        assert server.count("openai.chat") >= 4  # the baseline's 4 answers were judged again (n=2 each), not read from the journal
    state = LoopState.load(tmp_path / "runs" / "loop-test")
    assert (state.status, state.stop_reason, state.problem) == ("done", "target_met", None)
    assert state.record(0).metrics["precision.mean"].mean == 95 and state.record(0).not_measured is None


def test_most_judgments_failing_stops_the_run(fake_service, tiny_model, tmp_path):
    fake_service.responder = lambda call: "I would rather not score this."
    pipeline = Pipeline.from_config(loop_config(tmp_path, fake_service.openai_base_url, tiny_model))
    with pytest.raises(NotMeasured, match=r"8 of 8 judgments of the base model \(iteration 0\) failed \(not JSON: 8\), "
                                          r"above loop.max_failed_judgments=0.5") as info:
        pipeline.run()
    assert "eval/iter-0/judgments.jsonl" in info.value.fix
    assert info.value.state.record(0).not_measured and "iter1.train" not in info.value.state.steps


def test_the_failed_share_limit_is_configurable(tmp_path):
    from llamaduo.config import load_config

    report = {"failures": {"judgments": 4, "total_judgments": 8, "by_reason": {"not JSON": 4}}}
    config = load_config(data={"project": {"workdir": str(tmp_path)}})
    assert void_evaluation(config, report, tmp_path / "none.jsonl", 1) is None  # 50% is not above the default limit
    strict = load_config(data={"project": {"workdir": str(tmp_path)}, "loop": {"max_failed_judgments": 0.25}})
    void = void_evaluation(strict, report, tmp_path / "none.jsonl", 1)
    assert void is not None and "4 of 8 judgments of iteration 1 failed (not JSON: 4)" in void.problem
    assert void_evaluation(config, {"failures": {"judgments": 0, "total_judgments": 0}}, tmp_path / "none.jsonl", 1) is None
    # A judge that is down voids the evaluation even where any share of failures is allowed.
    lenient = load_config(data={"project": {"workdir": str(tmp_path)}, "loop": {"max_failed_judgments": 1.0}})
    down = tmp_path / "judgments.jsonl"
    down.write_text("".join(json.dumps({"ok": False, "judge": 0, "error": "x failed after 3 attempts: could not connect to the server"}) + "\n"
                            for _ in range(8)))
    everything = {"failures": {"judgments": 8, "total_judgments": 8, "by_reason": {"service error": 8}}}
    void = void_evaluation(lenient, everything, down, 2)
    assert void is not None and "judge0 (openai/gpt-4o-mini) could not be reached, so all 8 judgments of iteration 2 failed" in void.problem
    down.write_text(json.dumps({"ok": False, "judge": 0, "error": "reply is not valid JSON"}) + "\n")
    assert void_evaluation(lenient, everything, down, 2) is None  # the judge answered: the lenient limit applies


def test_synthesis_whose_every_call_failed_stops_the_run(fake_service, tiny_model, tmp_path):
    url, _ = refusing_server()
    data = loop_config(tmp_path, fake_service.openai_base_url, tiny_model, min_train=40, max_iterations=1, baseline=False)
    data["service"]["generator"] = {**data["service"]["generator"], "base_url": url}
    data["synth"]["max_calls"] = 3
    with pytest.raises(NotMeasured, match=r"all 3 generator calls of the synthetic round for iteration 1 failed \(service_error: 3\)"):
        Pipeline.from_config(data).run()
    state = LoopState.load(tmp_path / "runs" / "loop-test")
    assert state.stop_reason == "not_measured" and "iter0.synth" not in state.steps and "iter1.train" not in state.steps
    # The generator is back: the round is asked again (not skipped as already tried), then the loop goes on.
    fake_service.responder = Service(similarity=95, precision=95)
    data["service"]["generator"]["base_url"] = fake_service.openai_base_url
    state = Pipeline.from_config(data).run()
    assert state.status == "done" and state.steps["iter0.synth"]["accepted"] > 0
    # The round that topped train up fed iteration 1, and its table row says so.
    assert state.record(1).synthetic_added == state.steps["iter0.synth"]["accepted"]


def test_an_unpriced_model_under_a_budget_stops_the_loop_before_it_starts(fake_service, tiny_model, tmp_path):
    data = loop_config(tmp_path, fake_service.openai_base_url, tiny_model)
    data["service"]["budget_usd"] = 5
    data["service"]["judge"] = [{**data["service"]["judge"][0], "model": "my-judge"}]
    with pytest.raises(ConfigError, match=r"service.judge.0 uses model my-judge, which has no known price") as info:
        Pipeline.from_config(data).run()
    assert "service.prices.my-judge" in info.value.fix and not (tmp_path / "runs").exists()
    data["service"]["judge"][0]["free"] = True  # a judge the user hosts: explicitly free, so the budget may bind without it
    data["loop"]["max_iterations"] = 1
    fake_service.responder = Service(similarity=95, precision=95)
    assert Pipeline.from_config(data).run().stop_reason == "target_met"
