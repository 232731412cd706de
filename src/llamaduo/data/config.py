"""Config of the coverage dataset: where it comes from, what counts as satisfactory, how it splits and is cleaned."""

from __future__ import annotations

from pydantic import Field, model_validator

from llamaduo.configbase import Section


class Source(Section):
    """One input file, folder or hub id of the coverage dataset."""

    path: str
    """A file (JSONL, JSON, CSV, Parquet, optionally .gz), a saved `datasets` folder, or a hub id (`org/name`, needs network)."""
    task: str | None = None
    """The task this data belongs to (summarization, classification, closed_qa, coding, or any name); with `task_field`, the task of rows without that field."""
    task_field: str | None = None
    """Take each row's task from this field: a column, or a dotted path into nested objects (`dataset`, `metadata.task`)."""
    format: str | None = None
    """Force a format instead of auto-detecting it: a container (jsonl, json, csv, parquet, hf, hub), a record layout (chat, openai_log, sharegpt, alpaca, dolly, pair), or both as `csv:alpaca`."""
    split: str | None = None
    """For hub ids and saved `datasets` folders holding several splits: which one to read (none: all)."""

    @model_validator(mode="after")
    def _has_a_task(self) -> Source:
        if not self.task and not self.task_field:
            raise ValueError("a source needs `task`, `task_field` or both")
        return self


class DataConfig(Section):
    """The coverage dataset, its frozen train/test split, and the hygiene applied to train data."""

    store: str = "data"
    """Folder of the versioned dataset store, relative to the project folder."""
    sources: list[Source] = Field(default_factory=list)
    """What `llamaduo data ingest` reads when it is given no paths."""
    min_rating: float | None = None
    """Rows whose rating is below this are not satisfactory and are left out (none: keep all rated rows). A false satisfaction flag always excludes a row."""
    max_chars: int = Field(20000, ge=1)
    """Rows longer than this (all turns together) are dropped as oversized."""
    test_size: int = Field(100, ge=1)
    """Test items per task, frozen once split (the paper used 100)."""
    split_seed: int = 42
    """Seed of the deterministic, task-stratified split."""
    near_dup_threshold: float = Field(0.7, gt=0, le=1)
    """MinHash Jaccard similarity (word bigrams of instruction plus response) at or above which two pairs are near duplicates; one per cluster is kept. Applies to train data at split time and to synthetic pairs."""
    decontam_ngram: int = Field(13, ge=1)
    """A train or synthetic pair sharing any run of this many words with a test item is dropped as contaminated."""
    decontam_embed_threshold: float | None = Field(None, gt=0, le=1)
    """Also drop pairs whose sentence-embedding cosine (all-MiniLM-L6-v2, offline) to any test item reaches this (none: off)."""
