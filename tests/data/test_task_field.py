"""`data ingest --task-field`: one file mixing tasks, each row naming its own (AlpacaEval's `dataset`, `metadata.task`)."""

from __future__ import annotations

import csv
import json
import random

import pytest

from llamaduo.config import load_config
from llamaduo.data import DatasetStore, ingest
from llamaduo.errors import ConfigError, LlamaduoError
from tests.data.factory import project_config, sentence, write_jsonl


def alpaca_eval_rows(counts: dict[str | None, int], seed: int = 0) -> list[dict]:
    """AlpacaEval-shaped rows (instruction, output, generator, dataset); a None task leaves `dataset` out."""
    rng = random.Random(seed)
    rows = []
    for task, count in counts.items():
        for i in range(count):
            row = {"instruction": f"Question {i} about {task}? " + sentence(rng, 8), "output": sentence(rng, 12), "generator": "gpt4"}
            if task is not None:
                row["dataset"] = task
            rows.append(row)
    rng.shuffle(rows)  # mixed, as real logs are
    return rows


def openai_log_row(rng: random.Random, task: object) -> dict:
    row = {
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": sentence(rng, 10)}]},
        "response": {"model": "gpt-4o", "choices": [{"message": {"role": "assistant", "content": sentence(rng, 12)}, "finish_reason": "stop"}]},
    }
    if task is not None:
        row["metadata"] = {"task": task, "user": "u1"}
    return row


def write_project(tmp_path, test_size: int = 3):
    (tmp_path / "llamaduo.yaml").write_text(f"data:\n  test_size: {test_size}\n", encoding="utf-8")


def test_mixed_file_ingests_splits_and_counts_per_task(tmp_path, cli):
    write_project(tmp_path)
    rows = alpaca_eval_rows({"helpful_base": 10, "koala": 8, "oasst": 7, None: 6})
    write_jsonl(tmp_path / "alpaca_eval.jsonl", rows)
    code, out, err = cli("data", "ingest", "alpaca_eval.jsonl", "--task-field", "dataset", "--task", "general", cwd=tmp_path)
    assert code == 0, err
    assert "31 rows read, 31 kept (tasks " in out
    for task, count in (("helpful_base", 10), ("koala", 8), ("oasst", 7), ("general", 6)):
        assert f"{task} {count}" in out
    code, out, err = cli("data", "split", "--json", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["tasks"] == {
        "general": {"raw": 6, "test": 3, "train": 3},
        "helpful_base": {"raw": 10, "test": 3, "train": 7},
        "koala": {"raw": 8, "test": 3, "train": 5},
        "oasst": {"raw": 7, "test": 3, "train": 4},
    }
    code, out, err = cli("data", "stats", "--json", cwd=tmp_path)
    stats = json.loads(out)["splits"]
    assert {t: s["rows"] for t, s in stats["raw"]["tasks"].items()} == {"general": 6, "helpful_base": 10, "koala": 8, "oasst": 7}
    assert {t: s["rows"] for t, s in stats["test"]["tasks"].items()} == {t: 3 for t in ("general", "helpful_base", "koala", "oasst")}
    # Each row's task is the one its own field named.
    by_instruction = {r["instruction"]: r.get("dataset", "general") for r in rows}
    stored = DatasetStore(tmp_path / "data").examples("raw")
    assert {e.messages[0].content.strip(): e.task for e in stored} == {k.strip(): v for k, v in by_instruction.items()}


def test_nested_field_and_the_missing_task_error(tmp_path, cli):
    write_project(tmp_path)
    rng = random.Random(3)
    rows = [openai_log_row(rng, "summarization") for _ in range(4)] + [openai_log_row(rng, "coding") for _ in range(3)]
    rows.insert(5, openai_log_row(rng, None))  # no metadata at all
    write_jsonl(tmp_path / "logs.jsonl", rows)
    code, out, err = cli("data", "ingest", "logs.jsonl", "--task-field", "metadata.task", cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "logs.jsonl:6: the row has no `metadata.task`" in err and "Pass --task NAME" in err
    assert not (tmp_path / "data").exists()  # nothing stored from a failed ingest
    code, out, err = cli("data", "ingest", "logs.jsonl", "--task-field", "metadata.task", "--skip-invalid", cwd=tmp_path)
    assert code == 0, err
    assert "tasks summarization 4, coding 3" in out and "invalid logs.jsonl:6" in out
    code, out, err = cli("data", "ingest", "logs.jsonl", "--task-field", "metadata.task", "--task", "chat", "--replace", "--json", cwd=tmp_path)
    assert json.loads(out)["sources"][0]["tasks"] == {"summarization": 4, "chat": 1, "coding": 3}


def test_neither_task_nor_field_names_both_fixes(tmp_path, cli):
    write_project(tmp_path)
    write_jsonl(tmp_path / "a.jsonl", alpaca_eval_rows({"koala": 2}))
    code, _, err = cli("data", "ingest", "a.jsonl", cwd=tmp_path)
    assert code == 2 and "--task NAME" in err and "--task-field FIELD" in err


@pytest.mark.parametrize(
    ("value", "needle"),
    [({"name": "x"}, "holds a dict, not a task name"), (True, "holds a bool"), ("line one\nline two", "not a task name")],
)
def test_a_field_that_is_no_task_name_is_a_row_error(tmp_path, value, needle):
    rows = alpaca_eval_rows({"koala": 3})
    rows[1]["dataset"] = value
    config = project_config(tmp_path)
    with pytest.raises(LlamaduoError, match=needle):
        ingest(config, [str(write_jsonl(tmp_path / "a.jsonl", rows))], task_field="dataset")


def test_wrong_column_is_caught_on_its_first_row(tmp_path):
    # Pointing the field at the prompt column would make a one-row "task" of every row.
    config = project_config(tmp_path)
    with pytest.raises(LlamaduoError, match=r"a.jsonl:1: `instruction` holds a text of 150 characters, not a task name. Check --task-field"):
        ingest(config, [str(write_jsonl(tmp_path / "a.jsonl", [{**r, "instruction": "x" * 150} for r in alpaca_eval_rows({"koala": 3})]))],
               task_field="instruction")


def test_csv_column_named_with_a_dot_and_numbers(tmp_path):
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "response", "metadata.task"])
        writer.writerows([["Say hi", "hi", "greeting"], ["Add 2 and 2", "4", "math"], ["Say bye", "bye", ""]])
    report = ingest(project_config(tmp_path), [str(path)], task_field="metadata.task", task="misc")
    assert report.sources[0].tasks == {"greeting": 1, "math": 1, "misc": 1}
    numbered = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "p1", "response": "r1", "dataset": 7}])
    assert ingest(project_config(tmp_path), [str(numbered)], task_field="dataset").sources[0].tasks == {"7": 1}


def test_config_sources_take_a_task_field(tmp_path):
    write_jsonl(tmp_path / "mixed.jsonl", alpaca_eval_rows({"koala": 2, "oasst": 3}))
    config = project_config(tmp_path, sources=[{"path": "mixed.jsonl", "task_field": "dataset"}])
    assert ingest(config).sources[0].tasks == {"koala": 2, "oasst": 3}
    with pytest.raises(ConfigError, match="task_field"):
        load_config(data={"data": {"sources": [{"path": "mixed.jsonl"}]}})
