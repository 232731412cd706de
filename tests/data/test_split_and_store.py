"""The split is deterministic and stratified; the test split is frozen; train is deduplicated and decontaminated."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from llamaduo.cli.app import app
from llamaduo.data import DatasetStore, ingest, split
from llamaduo.errors import LlamaduoError
from tests.data.factory import dolly_rows, project_config, write_jsonl


def _project(tmp_path, rows_a=12, rows_b=9, seed=42, order=1):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = project_config(tmp_path, test_size=3, split_seed=seed)
    a = dolly_rows(rows_a, seed=1)[::order]
    ingest(config, [str(write_jsonl(tmp_path / "a.jsonl", a))], task="summarization")
    ingest(config, [str(write_jsonl(tmp_path / "b.jsonl", dolly_rows(rows_b, seed=2)))], task="closed_qa")
    return config, DatasetStore(config.path("data"))


def test_split_is_seeded_stratified_and_independent_of_row_order(tmp_path):
    config, store = _project(tmp_path / "x")
    report = split(config)
    assert report.tasks == {"closed_qa": {"raw": 9, "test": 3, "train": 6}, "summarization": {"raw": 12, "test": 3, "train": 9}}
    test_ids = {e.id for e in store.examples("test")}
    assert not test_ids & {e.id for e in store.examples("train")}
    config_y, reordered = _project(tmp_path / "y", order=-1)
    split(config_y)
    assert {e.id for e in reordered.examples("test")} == test_ids
    config_z, other = _project(tmp_path / "z", seed=7)
    split(config_z)
    assert {e.id for e in other.examples("test")} != test_ids
    info = store.info(report.train_version)
    assert info.stage == "split" and set(info.parents) == {store.latest("raw"), report.test_version} and info.rows == 15


def test_test_split_is_frozen_and_changes_are_detected(tmp_path):
    config, store = _project(tmp_path)
    first = split(config)
    ingest(config, [str(write_jsonl(tmp_path / "more.jsonl", dolly_rows(4, seed=5)))], task="summarization")
    second = split(config)
    assert second.test_hash == first.test_hash and second.new_test_tasks == [] and second.tasks["summarization"]["train"] == 13
    with pytest.raises(LlamaduoError, match="frozen"):
        store.write("test", store.examples("train"), stage="oops")
    ingest(config, [str(write_jsonl(tmp_path / "c.jsonl", dolly_rows(5, seed=3)))], task="coding")
    third = split(config)
    assert third.new_test_tasks == ["coding"] and third.test_hash != first.test_hash
    assert store.check_test_frozen() == third.test_hash
    path = store.parquet_path(store.latest("test"))
    table = pq.read_table(path).slice(1)
    pq.write_table(table, path)
    with pytest.raises(LlamaduoError, match="was modified"):
        store.check_test_frozen()
    with pytest.raises(LlamaduoError, match="was modified"):
        split(config)


def test_train_rows_duplicating_or_leaking_test_items_are_dropped(tmp_path):
    config = project_config(tmp_path, test_size=2)
    rows = dolly_rows(8, seed=4)
    near = dict(rows[0], response=rows[0]["response"].upper() + " ")
    rows.append(near)
    rows.append(dict(rows[1], instruction=rows[1]["instruction"] + "!!"))
    ingest(config, [str(write_jsonl(tmp_path / "r.jsonl", rows))], task="t")
    report = split(config)
    store = DatasetStore(config.path("data"))
    kept = store.examples("train")
    assert sum(report.dropped.values()) >= 2 and len(kept) == 10 - 2 - sum(report.dropped.values())
    texts = {e.instruction for e in kept}
    for dropped_reason in report.dropped:
        assert dropped_reason in {"duplicate", "near_duplicate", "test_exact", "test_near_dup", "test_ngram"}
    # whichever copy of a pair is in test, the other copy is not in train
    for test_item in store.examples("test"):
        assert all(test_item.reference.lower().strip() != e.reference.lower().strip() for e in kept)
    assert len(texts) == len(kept)


def test_split_needs_enough_rows(tmp_path):
    config = project_config(tmp_path, test_size=5)
    ingest(config, [str(write_jsonl(tmp_path / "r.jsonl", dolly_rows(5)))], task="tiny")
    with pytest.raises(LlamaduoError, match="not enough"):
        split(config)


def test_cli_split_stats_and_show(tmp_path):
    config, _ = _project(tmp_path)
    cfg = tmp_path / "llamaduo.yaml"
    cfg.write_text(f"project:\n  workdir: {tmp_path}\ndata:\n  test_size: 3\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "split", "-c", str(cfg)])
    assert result.exit_code == 0 and "newly frozen" in result.output
    stats = json.loads(runner.invoke(app, ["data", "stats", "-c", str(cfg), "--json"]).output)
    assert stats["splits"]["test"]["rows"] == 6 and stats["splits"]["train"]["tasks"]["closed_qa"]["rows"] == 6
    assert stats["splits"]["raw"]["sources"] == {"a.jsonl": 12, "b.jsonl": 9}
    lengths = stats["splits"]["train"]["tasks"]["summarization"]["prompt_tokens"]
    assert 20 < lengths["p50"] <= lengths["p90"] <= lengths["max"] < 60 and stats["test_hash"]
    assert "regex" in stats["tokenizer"]
    exact = runner.invoke(app, ["data", "stats", "-c", str(cfg), "--tokenizer", "minilm", "--json"])
    assert exact.exit_code == 0 and "tokenizer" in json.loads(exact.output)["tokenizer"]
    shown = runner.invoke(app, ["data", "show", "test", "-n", "2", "--task", "closed_qa", "-c", str(cfg)])
    assert shown.exit_code == 0 and shown.output.count("closed_qa") == 2
    rows = json.loads(runner.invoke(app, ["data", "show", "train", "-n", "1", "--json", "-c", str(cfg)]).output)
    assert len(rows) == 1 and rows[0]["messages"][-1]["role"] == "assistant"
