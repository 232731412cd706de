"""The loop end to end on a tiny model against the fake service: stop rules, resume after a crash, refusals."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from llamaduo.errors import LlamaduoError
from llamaduo.loop.lock import RunLock
from llamaduo.loop.pipeline import Pipeline, _plateaued
from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary
from tests.fakes import ChatCall
from tests.fakes.fixtures import FAKE_KEY
from tests.tiny import WORDS, build_tiny_model, chats


class Service:
    """Scripted service LLM: distinct echo pairs for the generator, a fixed verdict for the judge."""

    def __init__(self, similarity: float = 40, precision: float = 45):
        self.similarity, self.precision = similarity, precision

    def __call__(self, call: ChatCall) -> str:
        props = (call.schema or {}).get("properties", {})
        if "similarity" in props:
            return json.dumps({"similarity": self.similarity, "similarity_reason": "close", "precision": self.precision, "precision_reason": "ok"})
        # A deterministic function of the prompt, so an interrupted and an uninterrupted run see the same pairs.
        rng = random.Random(hashlib.sha256(call.last_user.encode()).hexdigest())
        item = next(iter(call.schema["$defs"].values())) if call.schema and "$defs" in call.schema else {"properties": {}}
        pairs = []
        for _ in range(2):
            words = " ".join(rng.sample(WORDS, 3))
            pairs.append({name: (f"repeat: {words}" if i == 0 else words) for i, name in enumerate(item["properties"])})
        return json.dumps({"pairs": pairs})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def loop_config(project: Path, service_url: str, model: Path, **loop: Any) -> dict[str, Any]:
    project.mkdir(parents=True, exist_ok=True)
    data = project / "echo.jsonl"
    data.write_text("".join(json.dumps({"messages": [m.model_dump() for m in ex.messages]}) + "\n" for ex in chats(24, seed=3)))
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": service_url, "api_key_env": "FAKE_SERVICE_KEY",
            "limits": {"timeout_s": 5, "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}}
    return {
        "project": {"name": "loop-test", "workdir": str(project)},
        "service": {"generator": role, "judge": [role]},
        "data": {"sources": [{"path": str(data), "task": "general"}], "test_size": 4},
        "synth": {"seeds_per_call": 2, "pairs_per_call": 2, "concurrency": 1, "language": None},
        "train": {"base_model": str(model), "max_steps": 2, "batch_size": 4, "max_seq_len": 64, "save_steps": 1, "logging_steps": 1},
        "infer": {"max_new_tokens": 6, "batch_size": 8},
        "evaluate": {"repeats": 2, "metrics": ["rouge_l"], "bootstrap": 100, "target": {"precision.mean": 90}},
        "loop": {"max_iterations": 2, "schedule": {"size": 2}, **loop},
    }


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


def test_a_crash_mid_run_resumes_to_the_same_result_without_repeating_calls(fake_service, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    fake_service.responder = Service()
    clean = Pipeline.from_config(loop_config(tmp_path / "clean", fake_service.openai_base_url, tiny_model, baseline=False))
    clean_state = clean.run()
    clean_calls = fake_service.count("openai.chat")

    class Crash(Exception):
        pass

    def crash_at_second_training(message: str) -> None:
        if message.startswith("[iter2.train]"):
            raise Crash

    config = loop_config(tmp_path / "crashy", fake_service.openai_base_url, tiny_model, baseline=False)
    with pytest.raises(Crash):
        Pipeline.from_config(config, reporter=crash_at_second_training).run()
    resumed = Pipeline.from_config(config).run()
    assert fake_service.count("openai.chat") - clean_calls <= clean_calls
    assert resumed.stop_reason == clean_state.stop_reason
    assert final_data(resumed_pipeline := Pipeline.from_config(config)) == final_data(clean)
    assert [r.train_size for r in resumed.iterations] == [r.train_size for r in clean_state.iterations]
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
    with RunLock(tmp_path / "runs" / "llamaduo"), pytest.raises(LlamaduoError, match="locked"):
        Pipeline.from_config({"project": {"workdir": str(tmp_path)}}).run()


def test_plateau_needs_a_ci_that_beats_the_best_mean():
    def rec(k: int, mean: float, lo: float) -> IterationRecord:
        return IterationRecord(iteration=k, metrics={"precision.mean": MetricSummary(mean=mean, ci_low=lo, ci_high=mean + 5)})

    assert _plateaued([rec(1, 50, 45), rec(2, 52, 47), rec(3, 53, 48)], "precision.mean", 2)
    assert not _plateaued([rec(1, 50, 45), rec(2, 52, 47), rec(3, 60, 55)], "precision.mean", 2)
    assert not _plateaued([rec(1, 50, 45), rec(2, 52, 47)], "precision.mean", 2)
    assert LoopState(run_id="r", config_hash="h").status == "running"
