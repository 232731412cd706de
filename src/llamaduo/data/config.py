"""Config of the coverage dataset: where it comes from, what counts as satisfactory, how it splits."""

from __future__ import annotations

from pydantic import Field

from llamaduo.configbase import Section


class Source(Section):
    """One input file, folder or hub id of the coverage dataset."""

    path: str
    """A file (JSONL, JSON, CSV, Parquet), a saved `datasets` folder, or a hub id."""
    task: str
    """The task this data belongs to (summarization, classification, closed_qa, coding, or any name)."""
    format: str | None = None
    """Force a format instead of auto-detecting it."""


class DataConfig(Section):
    """The coverage dataset and its frozen train/test split."""

    store: str = "data"
    """Folder of the versioned dataset store, relative to the project folder."""
    sources: list[Source] = Field(default_factory=list)
    """What `llamaduo data ingest` and `llamaduo run` read."""
    min_rating: float | None = None
    """Rows whose rating is below this are not satisfactory and are left out (none: keep all rated rows)."""
    max_chars: int = Field(20000, ge=1)
    """Rows longer than this (all turns together) are dropped as oversized."""
    test_size: int = Field(100, ge=1)
    """Test items per task, frozen once split (the paper used 100)."""
    split_seed: int = 42
    """Seed of the deterministic, task-stratified split."""
