"""`llamaduo eval` and `llamaduo judge-check` as a user meets them: bad input is one line and exit 2, no run folder left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamaduo.records import Answer, Message


def write_answers(path: Path, rows: list[Answer]) -> Path:
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows), encoding="utf-8")
    return path


def qa(i: int, text: str, reference: str | None = "Paris", sample: int = 0) -> Answer:
    return Answer(example_id=f"q{i}", task="closed_qa", sample=sample, messages=[Message(role="user", content="Capital of France?")],
                  reference=reference, text=text)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llamaduo.yaml").write_text("project:\n  name: t\nevaluate:\n  metrics: [rouge_l, token_f1, exact_match]\n  bootstrap: 200\n")
    return tmp_path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_reference", "have no reference answer"),
        ("empty", "there are no answers to evaluate"),
        ("rubric_syntax", "has a syntax error at line 1"),
        ("unknown_metric", "unknown metric `roug_l`. Did you mean `rouge_l`?"),
        ("bad_row", "line 1: text: Field required"),
        ("duplicate", "appears more than once"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run(cli, project, case, expected):
    args = ["eval", "--answers", "answers.jsonl"]
    rows = [qa(0, "Paris")]
    if case == "missing_reference":
        rows = [qa(0, "Paris"), qa(1, "Lyon", reference=None)]
    elif case == "empty":
        rows = []
    elif case == "rubric_syntax":
        (project / "bad.j2").write_text("{% block rubric %}x{% endblock %}{% block item %}{{ candidate {% endblock %}")
        args += ["--set", "evaluate.rubric=bad.j2"]
    elif case == "unknown_metric":
        args += ["--metric", "roug_l", "--no-judge"]
    elif case == "duplicate":
        rows = [qa(0, "Paris"), qa(0, "Paris")]
    write_answers(project / "answers.jsonl", rows)
    if case == "bad_row":
        (project / "answers.jsonl").write_text('{"example_id": "x", "task": "t", "messages": []}\n')
    code, out, err = cli(*args)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())


def test_eval_without_judge_writes_report_and_tracks_iterations(cli, project):
    write_answers(project / "answers.jsonl", [qa(0, "Paris", sample=0), qa(0, "The capital is Lyon", sample=1), qa(1, "paris.")])
    code, out, err = cli("eval", "--answers", "answers.jsonl", "--no-judge", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["mode"] == "judge-free" and report["metrics"]["exact_match"]["per_sample"]["mean"] == pytest.approx(200 / 3)
    assert report["metrics"]["exact_match"]["best_of_k"]["mean"] == 100.0
    assert "precision.mean was not measured" in report["target"]["explanation"]
    run_id = report["run_id"]
    code, out, err = cli("eval", "--answers", "answers.jsonl", "--no-judge", "--run", run_id, "--iteration", "1")
    assert code == 0, err
    assert "exact_match" in out and "target missed" in out
    saved = json.loads((project / "runs" / run_id / "eval" / "iter-1" / "report.json").read_text())
    assert set(saved["by_iteration"]) == {"0", "1"}


def test_judge_check_offline_scorer_via_cli(cli, project, shared_data):
    code, out, err = cli("judge-check", "--judge", "rouge_l", "--sets", "pandalm,llmbar,summeval",
                             "--sample", "8", "--data", str(shared_data))
    assert code == 0, err
    assert "pandalm: n 8, accuracy" in out and "summeval:" in out and "relevance.spearman" in out
    stored = json.loads((project / ".llamaduo" / "judge_check" / "rouge_l.json").read_text())
    assert stored["sets"]["llmbar"]["n"] == 8
    write_answers(project / "answers.jsonl", [qa(0, "Paris")])
    code, out, err = cli("eval", "--answers", "answers.jsonl", "--no-judge", "--json")
    assert json.loads(out)["offline_trust"]["rouge_l"]["pandalm.n"] == 8
    code, out, err = cli("judge-check", "--judge", "bleu", "--data", str(shared_data))
    assert code == 2 and "neither a judge index nor an offline scorer" in err


def test_missing_judge_key_fails_before_a_run_exists(cli, project, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_answers(project / "answers.jsonl", [qa(0, "Paris")])
    code, out, err = cli("eval", "--answers", "answers.jsonl")
    assert code == 2 and "OPENAI_API_KEY" in err and len(err.strip().splitlines()) == 1, err
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())
