"""The shipped example configs ingest the four paper tasks from ../shared/data through `data.sources`."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaduo.config import load_config
from llamaduo.data import DatasetStore, ingest, split

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TASKS = ("summarization", "classification", "closed_qa", "coding")


@pytest.mark.parametrize("task", TASKS)
def test_example_config_ingests_its_task(task, tmp_path, shared_data):
    # The store goes to tmp_path; the sources stay as the example writes them (../shared/data from the repo root).
    config = load_config(EXAMPLES / f"{task}.yaml", [f"data.store={tmp_path / 'store'}"])
    assert all(s.task == task for s in config.data.sources)
    report = ingest(config)
    assert report.kept > 1000 and report.invalid_count == 0
    assert {s.layout for s in report.sources} == {"alpaca" if task == "coding" else "dolly"}
    assert DatasetStore(tmp_path / "store").info(report.version).tasks == {task: report.total}
    if task == "summarization":
        result = split(config)
        assert result.tasks[task]["test"] == 100 and result.tasks[task]["train"] > 900
