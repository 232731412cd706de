"""`llamaduo data ingest`: read sources in any supported format, normalise rows into `Example`s, store a raw version.

Nothing is written until every source has been read, so a bad file never leaves a partial version.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.config import Config
from llamaduo.data.config import Source
from llamaduo.data.formats import CONTAINERS, RowError, detect_container, read_rows
from llamaduo.data.layouts import LAYOUTS, Dropped, metadata_of, require_layout, to_chat
from llamaduo.data.store import DatasetStore, content_hash
from llamaduo.errors import LlamaduoError
from llamaduo.records import Example, Message

MAX_LISTED_INVALID = 50
MAX_TASK_CHARS = 100
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")


class RowIssue(BaseModel):
    location: str
    """File and line, item or row number."""
    reason: str


class SourceReport(BaseModel):
    path: str
    task: str | None = None
    """The source's task, or with `task_field` the task of rows without that field."""
    task_field: str | None = None
    container: str
    layout: str | None = None
    rows: int = 0
    kept: int = 0
    tasks: dict[str, int] = Field(default_factory=dict)
    """Kept rows per task."""


class IngestReport(BaseModel):
    """What one ingest read, kept, dropped (by reason) and found invalid."""

    version: str | None = None
    """The raw version now current (unchanged when nothing new was added)."""
    sources: list[SourceReport] = Field(default_factory=list)
    rows_read: int = 0
    kept: int = 0
    added: int = 0
    """Kept rows that were not already in the raw split."""
    total: int = 0
    """Rows in the raw split after this ingest."""
    dropped: dict[str, int] = Field(default_factory=dict)
    invalid_count: int = 0
    invalid: list[RowIssue] = Field(default_factory=list)
    """The first invalid rows, with their locations (only with skip_invalid)."""


def parse_format(fmt: str | None) -> tuple[str | None, str | None]:
    """Split `--format` into (container, layout): `csv`, `alpaca` or `csv:alpaca`."""
    if not fmt:
        return None, None
    container, layout = None, None
    for part in fmt.lower().split(":"):
        if part in CONTAINERS and container is None:
            container = part
        elif part in LAYOUTS and layout is None:
            layout = part
        else:
            raise LlamaduoError(
                f"unknown format {fmt!r}", f"Use a container ({', '.join(CONTAINERS)}), a layout ({', '.join(LAYOUTS)}) or container:layout."
            )
    return container, layout


def _resolve(
    config: Config, sources: Sequence[str | Source] | None, task: str | None, fmt: str | None, task_field: str | None
) -> list[Source]:
    if not sources:
        if not config.data.sources:
            raise LlamaduoError("no sources to ingest", "Pass files (`llamaduo data ingest FILE --task NAME`) or list them under data.sources.")
        # Config paths are relative to the project folder, not to where the command runs.
        return [s.model_copy(update={"path": _config_path(config, s.path)}) for s in config.data.sources]
    resolved = []
    for src in sources:
        if isinstance(src, Source):
            resolved.append(src.model_copy(update={"path": _config_path(config, src.path)}))
            continue
        if not task and not task_field:
            raise LlamaduoError(
                "ingest needs a task for the given files",
                "Pass --task NAME (e.g. summarization, coding), or --task-field FIELD when each row names its task.",
            )
        resolved.append(Source(path=str(src), task=task, task_field=task_field, format=fmt))
    return resolved


def _config_path(config: Config, path: str) -> str:
    resolved = config.path(path)
    return str(resolved) if resolved.exists() else path  # a hub id stays as written


def ingest(
    config: Config,
    sources: Sequence[str | Source] | None = None,
    *,
    task: str | None = None,
    task_field: str | None = None,
    fmt: str | None = None,
    skip_invalid: bool = False,
    replace: bool = False,
) -> IngestReport:
    """Ingest files (or `data.sources`) into a new raw version; merges with the current raw split unless `replace`.

    `task` names the files' task; `task_field` (a column or dotted path) takes each row's task from the row,
    with `task` as the default for rows without it.
    """
    report = IngestReport()
    dropped: Counter[str] = Counter()
    kept: dict[str, Example] = {}
    for source in _resolve(config, sources, task, fmt, task_field):
        report.sources.append(_read_source(config, source, kept, dropped, report, skip_invalid))
    report.dropped = dict(sorted(dropped.items()))
    report.kept = len(kept)
    if not kept:
        reasons = ", ".join(f"{k}: {v}" for k, v in report.dropped.items()) or "no rows"
        raise LlamaduoError(f"no usable rows in the given sources ({reasons})", "Check the files and data.min_rating / data.max_chars.")
    store = DatasetStore(config.path(config.data.store))
    previous = store.latest("raw")
    existing = [] if replace else store.examples("raw")
    known = {e.id for e in existing}
    merged = existing + [e for i, e in kept.items() if i not in known]
    report.added = len(merged) - len(existing)
    report.total = len(merged)
    if previous and not replace and content_hash(merged) == store.info(previous).content_hash:
        report.version = previous
        return report
    summary = report.model_dump(exclude={"version", "invalid"})
    report.version = store.write("raw", merged, stage="ingest", parents=[previous] if previous else [], extra={"ingest": summary})
    return report


def _read_source(
    config: Config, source: Source, kept: dict[str, Example], dropped: Counter[str], report: IngestReport, skip_invalid: bool
) -> SourceReport:
    container, layout = parse_format(source.format)
    container = detect_container(source.path, container)
    stats = SourceReport(path=source.path, task=source.task, task_field=source.task_field, container=container)
    forced_layout = layout is not None
    label = source.path if container in ("hf", "hub") else Path(source.path).name
    for location, row in read_rows(source.path, container, source.split):
        stats.rows += 1
        report.rows_read += 1
        try:
            if isinstance(row, RowError):
                raise row
            if not isinstance(row, dict):
                raise RowError(f"expected an object, got {type(row).__name__}")
            if stats.layout is None:
                stats.layout = layout = require_layout(layout, row, location, forced_layout)
            example = _to_example(config, row, layout, source, label, location)
        except RowError as exc:
            report.invalid_count += 1
            if not skip_invalid:
                fix = exc.fix if isinstance(exc, TaskError) else "Fix the row, or pass --skip-invalid to leave invalid rows out (they are listed in the report)."
                raise LlamaduoError(f"{location}: {exc}", fix) from None
            if len(report.invalid) < MAX_LISTED_INVALID:
                report.invalid.append(RowIssue(location=location, reason=str(exc)))
            continue
        except Dropped as exc:
            dropped[str(exc)] += 1
            continue
        if example.id in kept:
            dropped["duplicate"] += 1
            continue
        kept[example.id] = example
        stats.kept += 1
        stats.tasks[example.task] = stats.tasks.get(example.task, 0) + 1
    return stats


class TaskError(RowError):
    """A row whose task cannot be told; carries its own fix, since the usual one ("fix the row") is rarely it."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.fix = fix


def row_task(row: dict[str, Any], source: Source) -> str:
    """The row's task: its `task_field` value (a column, or a dotted path into nested objects), else the source's task."""
    field = source.task_field
    if field:
        value = _lookup(row, field)
        wrong = "Check --task-field (a source's `task_field`): it should name a short label such as `dataset` or `metadata.task`."
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            raise TaskError(f"`{field}` holds a {type(value).__name__}, not a task name", wrong)
        text = "" if value is None else str(value).strip()
        if len(text) > MAX_TASK_CHARS or "\n" in text:
            # Most likely the wrong column (a prompt or an answer): thousands of one-row "tasks" would follow.
            raise TaskError(f"`{field}` holds a text of {len(text)} characters, not a task name", wrong)
        if text:
            return text
    if source.task:
        return source.task
    raise TaskError(
        f"the row has no `{field}` and no default task was given",
        f"Pass --task NAME (a source's `task` in the config) as the task of rows without `{field}`, or --skip-invalid to leave them out.",
    )


def _lookup(row: dict[str, Any], path: str) -> Any:
    # A flat column named with dots (CSV, parquet) wins over walking nested objects.
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _to_example(config: Config, row: dict, layout: str, source: Source, label: str, location: str) -> Example:
    messages, tools = to_chat(layout, row)
    if any(_binary(m["content"] or "") for m in messages):
        raise Dropped("non_text")
    if sum(len(m["content"] or "") + sum(len(c["function"]["arguments"]) for c in m.get("tool_calls") or []) for m in messages) > config.data.max_chars:
        raise Dropped("oversized")
    meta = metadata_of(row)
    if meta.get("satisfied") is False:
        raise Dropped("unsatisfactory")
    bar = config.data.min_rating
    if bar is not None and meta.get("rating") is not None and meta["rating"] < bar:
        raise Dropped("unsatisfactory")
    task = row_task(row, source)  # after the drops: a row left out anyway needs no task
    meta.update(origin=location, layout=layout)
    parsed = [Message(**m) for m in messages]
    return Example(id=Example.content_id(task, parsed, tools), task=task, messages=parsed, tools=tools, source=label, metadata=meta)


def _binary(text: str) -> bool:
    """Text with NUL bytes or many control characters is an encoded blob, not language."""
    if "\x00" in text:
        return True
    return len(_CONTROL.findall(text)) > max(2, len(text) // 100)
