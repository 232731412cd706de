"""The migration-curve benchmark's data selection (benchmarks/migration_curve.py): seeded, frozen test items disjoint
from training, nested training subsets, and the task loaders on small hand-written rows."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from llamaduo.errors import LlamaduoError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "migration_curve.py"


@pytest.fixture(scope="module")
def mc():
    spec = importlib.util.spec_from_file_location("migration_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["migration_curve"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("migration_curve", None)


def _pool(mc, n: int, passages: int | None = None) -> list:
    """n QA rows over `passages` shared passages (several questions per passage, as in Dolly closed QA)."""
    passages = passages or n
    return [mc.chat_example("closed_qa", f"question {i}\n\npassage {i % passages}", f"answer {i}", {"group": f"passage {i % passages}"})
            for i in range(n)]


def test_split_is_seeded(mc):
    pool = _pool(mc, 200)
    first, again, other = mc.frozen_split(pool, 20, 0), mc.frozen_split(pool, 20, 0), mc.frozen_split(pool, 20, 1)
    assert [e.id for e in first[0]] == [e.id for e in again[0]] and [e.id for e in first[1]] == [e.id for e in again[1]]
    assert [e.id for e in first[0]] != [e.id for e in other[0]]
    assert len(first[0]) == 20 and len(first[1]) == 180


def test_test_items_are_disjoint_from_training_by_row_and_by_passage(mc):
    pool = _pool(mc, 300, passages=60)  # five questions per passage
    test, train = mc.frozen_split(pool, 30, 0)
    assert not {e.id for e in test} & {e.id for e in train}
    held = {e.metadata["group"] for e in test}
    assert not held & {e.metadata["group"] for e in train}
    assert len(train) + len(test) < len(pool)  # questions on a test passage were left out of training


def test_a_separate_test_pool_supplies_the_test_items(mc):
    train_pool = [mc.chat_example("coding", f"write f{i}", f"def f{i}(): pass", {"group": f"write f{i}"}) for i in range(50)]
    test_pool = [mc.chat_example("coding", f"mbpp {i}", "code", {"group": f"mbpp {i}", "test_list": ["assert True"]}) for i in range(40)]
    test, train = mc.frozen_split(train_pool, 10, 0, test_pool)
    assert {e.id for e in test} <= {e.id for e in test_pool} and len(train) == 50
    with pytest.raises(LlamaduoError, match="only 40 test items"):
        mc.frozen_split(train_pool, 41, 0, test_pool)


def test_training_subsets_are_nested(mc):
    _, train = mc.frozen_split(_pool(mc, 700), 100, 0)
    subsets = mc.nested_subsets(train, [512, 0, 128])
    assert list(subsets) == [0, 128, 512] and [len(s) for s in subsets.values()] == [0, 128, 512]
    assert subsets[128] == subsets[512][:128]


def test_duplicate_rows_count_once(mc):
    pool = _pool(mc, 10) + _pool(mc, 10)
    test, train = mc.frozen_split(pool, 3, 0)
    assert len(test) + len(train) == 10


def test_loaders_on_hand_written_rows(mc, tmp_path):
    dolly = tmp_path / "dolly.jsonl"
    dolly.write_text("".join(json.dumps(r) + "\n" for r in [
        {"instruction": "Summarise", "context": "A long passage.", "response": "Short.", "category": "summarization"},
        {"instruction": "What is X?", "context": "", "response": "Y.", "category": "closed_qa"},
    ]))
    rows = mc.dolly_examples(dolly, "summarization")
    assert rows[0].messages[0].content == "Summarise\n\nA long passage." and rows[0].reference == "Short."
    assert rows[0].metadata["group"] == "A long passage." and rows[1].metadata["group"] == "What is X?"
    teacher = tmp_path / "gpteacher.json"
    teacher.write_text(json.dumps([
        {"instruction": "Write a Python function that adds two numbers.", "input": "", "response": "def add(a, b):\n    return a + b"},
        {"instruction": "Write a JavaScript function that adds.", "input": "", "response": "function add(a, b) { return a + b; }"},
        {"instruction": "Explain Python's GIL.", "input": "", "response": "It is a lock."},
    ]))
    assert [e.instruction for e in mc.gpteacher_python(teacher)] == ["Write a Python function that adds two numbers."]
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps({"task_id": 11, "text": "Write a function to add.", "code": "def add(a,b):\r\n    return a+b",
                                "test_list": ["assert add(1,2)==3", "assert add(0,0)==0"], "test_setup_code": ""}) + "\n")
    (item,) = mc.mbpp_examples(mbpp)
    assert item.messages[0].content == "Write a function to add.\nYour code should pass this test:\nassert add(1,2)==3"
    assert item.reference == "def add(a,b):\n    return a+b" and item.metadata["test_list"] == ["assert add(1,2)==3", "assert add(0,0)==0"]


def test_sizes_and_failure_kinds(mc):
    assert mc.parse_sizes(["128,512"]) == [0, 128, 512] and mc.parse_sizes(["512", "0", "128"]) == [0, 128, 512]
    with pytest.raises(SystemExit):
        mc.parse_sizes(["-1"])
    assert mc.failure_kind("failed: NameError: name 'x' is not defined") == "NameError"
    assert mc.failure_kind("failed: AssertionError") == "AssertionError"
    assert mc.failure_kind("timeout: wall-clock timeout after 20 s") == "timeout"


def test_settings_change_refuses_to_reuse_the_cache(mc, tmp_path):
    args = argparse.Namespace(
        out=tmp_path, seed=0, test_items=100, max_seq_len=384, epochs=1.0, infer_batch=16, quick=False)
    mc.check_settings(args)
    mc.check_settings(args)  # the same settings: fine
    args.epochs = 2.0
    with pytest.raises(LlamaduoError, match="holds a run with other settings \\(epochs\\)"):
        mc.check_settings(args)
