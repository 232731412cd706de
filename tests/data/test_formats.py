"""Every input format goes through `ingest` into normalised Examples; bad rows are counted by reason."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llamaduo.data import DatasetStore, ingest
from llamaduo.records import Example
from tests.data.factory import dolly_rows, project_config, write_jsonl


def _ingest(tmp_path, path, task="general", **kw):
    config = project_config(tmp_path, **kw.pop("data", {}))
    report = ingest(config, [str(path)], task=task, **kw)
    return report, DatasetStore(config.path("data")).examples("raw")


def test_dolly_jsonl_puts_context_into_the_user_turn(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", dolly_rows(3))
    report, rows = _ingest(tmp_path, path, task="summarization")
    assert report.kept == 3 and report.sources[0].layout == "dolly" and report.sources[0].container == "jsonl"
    first = rows[0]
    raw = dolly_rows(3)[0]
    assert first.messages[0].role == "user" and raw["instruction"] in first.instruction and raw["context"] in first.instruction
    assert first.reference == raw["response"]
    assert first.id == Example.content_id("summarization", first.messages)
    assert first.metadata["tags"] == ["summarization"] and first.metadata["origin"].endswith("d.jsonl:1")


def test_alpaca_json_list_and_gzip(tmp_path):
    rows = [{"instruction": "Add two numbers", "input": "2 and 3", "output": "5"}, {"instruction": "Say hi", "input": "", "output": "hi"}]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    report, stored = _ingest(tmp_path, tmp_path / "a.json")
    assert report.sources[0].layout == "alpaca" and [e.instruction for e in stored] == ["Add two numbers\n\n2 and 3", "Say hi"]
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "p1", "completion": "c1"}\n'))
    report, stored = _ingest(tmp_path, tmp_path / "b.jsonl.gz")
    assert report.sources[0].layout == "pair" and stored[-1].reference == "c1"


def test_csv_with_ratings_below_the_bar_left_out(tmp_path):
    path = tmp_path / "log.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "response", "rating", "timestamp"])
        writer.writerows([["good q", "good a", "5", "2024-01-01"], ["bad q", "bad a", "2", "2024-01-02"], ["no rating", "kept", "", ""]])
    report, rows = _ingest(tmp_path, path, data={"min_rating": 4})
    assert report.kept == 2 and report.dropped == {"unsatisfactory": 1}
    assert rows[0].metadata["rating"] == 5.0 and rows[0].metadata["timestamp"] == "2024-01-01"


def test_parquet_chat_messages_with_false_flag_dropped(tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "satisfied": True},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "satisfied": False},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    report, stored = _ingest(tmp_path, tmp_path / "c.parquet")
    assert report.sources[0].container == "parquet" and report.dropped == {"unsatisfactory": 1}
    assert [m.role for m in stored[0].messages] == ["system", "user", "assistant"]


def test_openai_chat_completion_logs(tmp_path):
    log = {
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour"}]}]},
        "response": {"model": "gpt-4o-2024-08-06", "created": 1700000000, "choices": [{"message": {"role": "assistant", "content": "Blue"}, "finish_reason": "stop"}]},
        "metadata": {"thumbs_up": True},
    }
    cut = {**log, "response": {**log["response"], "choices": [{"message": {"role": "assistant", "content": "Bl"}, "finish_reason": "length"}]}}
    orphan = {"request": {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}]}, "response": log["response"]}
    other = {"request": {"messages": [{"role": "critic", "content": "x"}]}, "response": log["response"]}
    report, stored = _ingest(tmp_path, write_jsonl(tmp_path / "log.jsonl", [log, cut, orphan, other]))
    assert report.sources[0].layout == "openai_log" and report.kept == 1
    assert report.dropped == {"truncated_answer": 1, "orphan_tool_result": 1, "unsupported_role": 1}
    example = stored[0]
    assert example.instruction == "Name a colour" and example.reference == "Blue"
    assert example.metadata["service_model"] == "gpt-4o-2024-08-06" and example.metadata["satisfied"] is True
    assert example.metadata["timestamp"].startswith("2023-11-14")


def test_sharegpt_multi_turn(tmp_path):
    row = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]}
    report, stored = _ingest(tmp_path, write_jsonl(tmp_path / "s.jsonl", [row]))
    assert report.sources[0].layout == "sharegpt"
    assert [(m.role, m.content) for m in stored[0].messages] == [("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]


def test_saved_datasets_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list(dolly_rows(4)).save_to_disk(str(tmp_path / "hf"))
    report, stored = _ingest(tmp_path, tmp_path / "hf")
    assert report.sources[0].container == "hf" and report.kept == 4 and len(stored) == 4


def test_empty_oversized_non_text_and_duplicate_rows_counted(tmp_path):
    rows = [
        {"prompt": "q1", "response": "a1"},
        {"prompt": "q1", "response": "a1"},
        {"prompt": "", "response": "a"},
        {"prompt": "q", "response": 42},
        {"prompt": "q\x00bin", "response": "a"},
        {"prompt": "x" * 500, "response": "long"},
    ]
    report, stored = _ingest(tmp_path, write_jsonl(tmp_path / "m.jsonl", rows), data={"max_chars": 100})
    assert report.kept == 1 and len(stored) == 1
    assert report.dropped == {"duplicate": 1, "empty": 1, "non_text": 2, "oversized": 1}


def test_forced_layout_and_reingest_is_idempotent(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", dolly_rows(2))
    config = project_config(tmp_path)
    first = ingest(config, [str(path)], task="t", fmt="jsonl:dolly")
    again = ingest(config, [str(path)], task="t")
    assert again.version == first.version and again.added == 0
    other = ingest(config, [str(write_jsonl(tmp_path / "e.jsonl", dolly_rows(1, seed=9)))], task="t")
    store = DatasetStore(config.path("data"))
    assert other.total == 3 and store.info(other.version).parents == [first.version]


@pytest.mark.parametrize("fmt", ["yaml", "json:jsonl:csv"])
def test_unknown_format_names_rejected(tmp_path, fmt):
    from llamaduo.errors import LlamaduoError

    with pytest.raises(LlamaduoError, match="unknown format"):
        _ingest(tmp_path, write_jsonl(tmp_path / "d.jsonl", dolly_rows(1)), fmt=fmt)
