"""The runs registry and `llamaduo runs list|show|compare`."""

from __future__ import annotations

import json
import shutil

import pytest

from llamaduo.loop.state import LoopState
from llamaduo.report.registry import RunsRegistry
from tests.report.runfixture import corrupt, make_run, project_config


def best_precision(state: LoopState) -> float:
    return next(it for it in state.iterations if it.iteration == state.best_iteration).metrics["precision.mean"].mean


@pytest.fixture
def two_runs(tmp_path):
    config = project_config(tmp_path)
    make_run(config, "run-a", iterations=2, n=5, seed=1, quality_start=40)
    other = project_config(tmp_path, synth__seed=7, loop__max_iterations=5)
    make_run(other, "run-b", iterations=3, n=5, seed=2, quality_start=50)
    return tmp_path, other


def test_list_show_and_compare(two_runs, cli):
    root, _ = two_runs
    code, out, err = cli("runs", "list", "--json", cwd=root)
    assert code == 0, err
    runs = {r["run_id"]: r for r in json.loads(out)["runs"]}
    assert set(runs) == {"run-a", "run-b"}
    assert runs["run-b"]["iterations"] == 3 and runs["run-b"]["status"] == "done"
    state_b = LoopState.load(root / "runs/run-b")
    assert runs["run-b"]["metrics"]["precision.mean"] == pytest.approx(best_precision(state_b))
    assert runs["run-b"]["baseline"]["precision.mean"] == pytest.approx(state_b.iterations[0].metrics["precision.mean"].mean)

    code, out, _ = cli("runs", "compare", "run-a", "run-b", "--json", cwd=root)
    data = json.loads(out)
    state_a = LoopState.load(root / "runs/run-a")
    metrics = {m[0]: m for m in data["metrics"]}
    a_prec, b_prec = best_precision(state_a), best_precision(state_b)
    assert metrics["precision.mean"][1:] == pytest.approx([a_prec, b_prec, b_prec - a_prec])
    diff = {d[0]: d[1:] for d in data["config_diff"]}
    assert diff == {"synth.seed": [0, 7], "loop.max_iterations": [3, 5]}

    code, out, _ = cli("runs", "compare", "run-a", "run-b", cwd=root)
    assert code == 0 and "config differences" in out and "synth.seed" in out and "precision.mean" in out
    code, out, _ = cli("runs", "show", "run-a", cwd=root)
    assert code == 0 and "run-a done" in out and "base model" in out
    code, out, _ = cli("runs", "list", cwd=root)
    assert code == 0 and "run-a" in out and "run-b" in out


def test_index_follows_the_folders(two_runs, cli):
    root, _ = two_runs
    cli("runs", "list", cwd=root)
    state = LoopState.load(root / "runs/run-a")
    state.status, state.stop_reason = "stopped", "budget"
    state.save(root / "runs/run-a")
    shutil.rmtree(root / "runs/run-b")
    code, out, _ = cli("runs", "list", "--json", cwd=root)
    runs = {r["run_id"]: r for r in json.loads(out)["runs"]}
    assert code == 0 and set(runs) == {"run-a"} and runs["run-a"]["status"] == "stopped"


def test_unreadable_run_is_a_warning_for_list_and_an_error_for_show(two_runs, cli):
    root, _ = two_runs
    corrupt(root / "runs/run-b/state.json")
    code, out, err = cli("runs", "list", cwd=root)
    assert code == 0 and "run-a" in out and "warning: run-b:" in err and "is corrupt" in err
    code, _, err = cli("runs", "show", "run-b", cwd=root)
    assert code == 2 and "is corrupt" in err and err.strip().count("\n") == 0


def test_unknown_runs_are_one_line_errors(two_runs, cli):
    root, _ = two_runs
    code, _, err = cli("runs", "compare", "run-a", "run-zzz", cwd=root)
    assert code == 2 and "no run run-zzz" in err
    code, _, err = cli("runs", "show", "../etc", cwd=root)
    assert code == 2 and "is not a run id" in err


def test_unreadable_index_file(tmp_path):
    bad = tmp_path / "runs.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    from llamaduo.errors import LlamaduoError

    with pytest.raises(LlamaduoError, match="unreadable"):
        RunsRegistry(bad)
