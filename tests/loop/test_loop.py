"""The loop end to end on a tiny model against the fake service: stop rules, resume after a crash, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llamaduo.errors import LlamaduoError
from llamaduo.loop.lock import RunLock
from llamaduo.loop.outcome import plateaued
from llamaduo.loop.pipeline import Pipeline
from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary
from tests.fakes.fixtures import FAKE_KEY
from tests.fakes.loop_service import LoopService as Service
from tests.loop.project import loop_config


def final_data(pipeline: Pipeline) -> str:
    rows = sorted(e.id for e in pipeline.store.examples("synthetic"))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def test_loop_runs_to_max_iterations_then_a_rerun_costs_nothing(fake_service, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.responder = Service()
    pipeline = Pipeline.from_config(loop_config(tmp_path, fake_service.openai_base_url, tiny_model))
    state = pipeline.run()
    assert state.status == "done" and state.stop_reason == "max_iterations"
    assert [r.iteration for r in state.iterations] == [0, 1, 2]
    assert state.iterations[2].synthetic_added > 0
    assert state.iterations[2].train_size > state.iterations[1].train_size
    assert state.iterations[1].metrics["precision.mean"].mean == pytest.approx(45)
    assert "rouge_l.mean" in state.iterations[1].judge_free
    assert state.best_iteration in (1, 2) and Path(state.best_model_dir, "config.json").is_file()
    sent = fake_service.count("openai.chat")
    assert Pipeline.from_config(loop_config(tmp_path, fake_service.openai_base_url, tiny_model)).run().status == "done"
    assert fake_service.count("openai.chat") == sent


def test_target_met_stops_after_the_first_iteration(fake_service, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.responder = Service(similarity=95, precision=95)
    state = Pipeline.from_config(loop_config(tmp_path, fake_service.openai_base_url, tiny_model, baseline=False)).run()
    assert state.stop_reason == "target_met"
    assert [r.iteration for r in state.iterations] == [1]
    assert state.iterations[0].target_met


# iter1.synth: the crash lands after iteration 1 was recorded, before its synthetic round (a lost round once).
@pytest.mark.parametrize("crash_step", ["iter1.synth", "iter2.train"])
def test_a_crash_mid_run_resumes_to_the_same_result_without_repeating_calls(crash_step, fake_service, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.responder = Service()
    clean = Pipeline.from_config(loop_config(tmp_path / "clean", fake_service.openai_base_url, tiny_model, baseline=False))
    clean_state = clean.run()
    clean_calls = fake_service.count("openai.chat")

    class Crash(Exception):
        pass

    def crash_at_step(message: str) -> None:
        if message.startswith(f"[{crash_step}]"):
            raise Crash

    config = loop_config(tmp_path / "crashy", fake_service.openai_base_url, tiny_model, baseline=False)
    with pytest.raises(Crash):
        Pipeline.from_config(config, reporter=crash_at_step).run()
    resumed = Pipeline.from_config(config).run()
    assert fake_service.count("openai.chat") - clean_calls == clean_calls  # crashed between steps: no call in flight
    assert resumed.stop_reason == clean_state.stop_reason
    assert final_data(resumed_pipeline := Pipeline.from_config(config)) == final_data(clean)
    assert [(r.train_size, r.synthetic_added) for r in resumed.iterations] == [(r.train_size, r.synthetic_added) for r in clean_state.iterations]
    assert resumed_pipeline.config.project.name == "loop-test"


def test_changed_config_is_refused_with_force_new_offered(fake_service, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.responder = Service(similarity=95, precision=95)
    config = loop_config(tmp_path, fake_service.openai_base_url, tiny_model, baseline=False)
    Pipeline.from_config(config).run()
    config["train"]["learning_rate"] = 1e-3
    with pytest.raises(LlamaduoError, match=r"train changed.*--force-new"):
        Pipeline.from_config(config).run()
    assert Pipeline.from_config(config).run(force_new=True).status == "done"


def test_locked_run_and_bad_inputs_are_refused(tmp_path):
    config = {"project": {"workdir": str(tmp_path)}, "data": {"sources": [{"path": "missing.jsonl", "task": "t"}]}}
    with pytest.raises(LlamaduoError, match="does not exist"):
        Pipeline.from_config(config).run()
    with pytest.raises(LlamaduoError, match="target key|unknown metric|not a known metric|metric"):
        Pipeline.from_config({"project": {"workdir": str(tmp_path)}, "evaluate": {"target": {"bleurt.mean": 3}}}).run()
    with pytest.raises(LlamaduoError, match="no coverage data"):
        Pipeline.from_config({"project": {"workdir": str(tmp_path)}}).run()
    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    with RunLock(tmp_path / "runs" / "llamaduo"), pytest.raises(LlamaduoError, match="locked"):
        Pipeline.from_config({"project": {"workdir": str(tmp_path)}, "data": {"sources": [{"path": "rows.jsonl", "task": "t"}]}}).run()


def test_plateau_needs_a_ci_that_beats_the_best_mean():
    def rec(k: int, mean: float | None, lo: float | None) -> IterationRecord:
        hi = None if lo is None or mean is None else mean + 5
        return IterationRecord(iteration=k, metrics={"precision.mean": MetricSummary(mean=mean, ci_low=lo, ci_high=hi)})

    assert plateaued([rec(1, 50, 45), rec(2, 52, 47), rec(3, 53, 48)], "precision.mean", 2)
    assert not plateaued([rec(1, 50, 45), rec(2, 52, 47), rec(3, 60, 55)], "precision.mean", 2)
    assert not plateaued([rec(1, 50, 45), rec(2, 52, 47)], "precision.mean", 2)
    # No CI (one sample, or identical scores) and no mean (not measured) are no evidence of a plateau.
    assert not plateaued([rec(1, 50, 45), rec(2, 40, None), rec(3, 41, None)], "precision.mean", 2)
    assert not plateaued([rec(1, 50, 45), rec(2, 40, 35), rec(3, None, None)], "precision.mean", 2)
    assert LoopState(run_id="r", config_hash="h").status == "running"


def test_run_and_status_cli(fake_service, tiny_model, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from llamaduo.cli.app import app

    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.responder = Service(similarity=95, precision=95)
    config = tmp_path / "llamaduo.yaml"
    config.write_text(yaml.safe_dump(loop_config(tmp_path, fake_service.openai_base_url, tiny_model, baseline=False)))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert '"stop_reason": "target_met"' in result.stdout
    shown = runner.invoke(app, ["status", "--config", str(config), "--json"])
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.stdout)
    assert status["stop_reason"] == "target_met" and status["spend_usd"] > 0
    assert status["iterations"][0]["metrics"]["precision.mean"]["mean"] == 95
    assert runner.invoke(app, ["status", "--config", str(config)]).exit_code == 0
    listed = runner.invoke(app, ["runs", "list", "--config", str(config)])
    assert listed.exit_code == 0 and "loop-test" in listed.stdout
    missing = runner.invoke(app, ["status", "nope", "--config", str(config)])
    assert isinstance(missing.exception, LlamaduoError) and "no loop run nope" in str(missing.exception)
