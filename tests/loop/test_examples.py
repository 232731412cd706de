"""Every shipped example config must validate against the current config models."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaduo.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.data.sources, "an example names the data it uses"
    # The shared data beside the repository, or a file shipped in examples/ with its source and license.
    for source in config.data.sources:
        shipped = config.path(source.path)
        assert "shared/data" in source.path or (shipped.is_file() and (shipped.parent / "SOURCE.md").is_file())


def test_every_paper_task_has_an_example() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"summarization", "classification", "closed_qa", "coding", "paper_table1_grid"} <= names
