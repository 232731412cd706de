"""Readers of the container formats (JSONL, JSON, CSV, Parquet, `datasets` folders and hub ids).

A reader yields `(location, row)` pairs where location names the file and line/row for error
messages. Whole-file problems (missing, not UTF-8, empty, wrong format) raise `LlamaduoError` at once.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamaduo.errors import LlamaduoError

CONTAINERS = ("jsonl", "json", "csv", "parquet", "hf", "hub")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class RowError(Exception):
    """One row that cannot be read (bad JSON, not an object, missing fields); reported with its location."""


Row = tuple[str, Any]
"""(location, the decoded row or a RowError describing why it could not be decoded)."""


def detect_container(path: str, forced: str | None = None) -> str:
    """The container of a source: the forced one, a folder or hub id, the extension, else a sniff of the text."""
    p = Path(path)
    if forced:
        return forced
    if p.is_dir():
        return "hf"
    if not p.exists():
        if _HUB_ID.match(path) and p.suffix.lower() not in _EXT:
            return "hub"
        raise LlamaduoError(f"{path}: no such file or folder", "Check the path (relative paths start at the current folder).")
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXT:
        return _EXT[suffixes[-1]]
    head = _read_text(p)[:4096].lstrip()
    if head.startswith("["):
        return "json"
    if head.startswith("{"):
        return "jsonl" if _first_line_is_object(head) else "json"
    if p.read_bytes()[:4] == b"PAR1":
        return "parquet"
    return "csv"


def _first_line_is_object(head: str) -> bool:
    try:
        return isinstance(json.loads(head.splitlines()[0]), dict)
    except (json.JSONDecodeError, IndexError):
        return False


def read_rows(path: str, container: str, split: str | None = None) -> Iterator[Row]:
    """Yield every row of a source; RowError values mark rows that could not be decoded."""
    if container == "jsonl":
        yield from _jsonl(Path(path))
    elif container == "json":
        yield from _json(Path(path))
    elif container == "csv":
        yield from _csv(Path(path))
    elif container == "parquet":
        yield from _parquet(Path(path))
    elif container in ("hf", "hub"):
        yield from _datasets(path, container, split)
    else:
        raise LlamaduoError(f"unknown format {container!r}", f"Use one of {', '.join(CONTAINERS)}.")


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise LlamaduoError(f"{path}: no such file", "Check the path.")
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            raise LlamaduoError(f"{path} is not a valid gzip file", "Decompress it or fix the file.") from None
    return data


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LlamaduoError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start})", "Re-save the file as UTF-8 (e.g. `iconv -t UTF-8`)."
        ) from None
    if not text.strip():
        raise LlamaduoError(f"{path} is empty", "Point ingest at a file with rows.")
    return text


def _jsonl(path: Path) -> Iterator[Row]:
    text = _read_text(path)
    first = True
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if first:
                raise LlamaduoError(
                    f"{where}: not JSON lines ({exc.msg})", "Check the file, or pass --format to read it as another format."
                ) from None
            yield where, RowError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        first = False
        yield where, row if isinstance(row, dict) else RowError(f"expected a JSON object, got {type(row).__name__}")


def _json(path: Path) -> Iterator[Row]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlamaduoError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            "Fix the file, or pass --format jsonl if it holds one object per line.",
        ) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            data = lists[0]
        else:
            data = [data]
    if not isinstance(data, list):
        raise LlamaduoError(f"{path}: expected a JSON list of objects, got {type(data).__name__}", "Wrap the rows in a list.")
    if not data:
        raise LlamaduoError(f"{path} holds an empty list", "Point ingest at a file with rows.")
    for number, row in enumerate(data, 1):
        where = f"{path}: item {number}"
        yield where, row if isinstance(row, dict) else RowError(f"expected a JSON object, got {type(row).__name__}")


def _csv(path: Path) -> Iterator[Row]:
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or len(reader.fieldnames) < 2:
        raise LlamaduoError(f"{path}: not a CSV file with a header of at least two columns", "Add a header row, or pass --format.")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            yield where, RowError(f"{len(reader.fieldnames) + len(row[None])} fields, the header has {len(reader.fieldnames)}")
        elif any(v is None for v in row.values()):
            yield where, RowError(f"fewer fields than the {len(reader.fieldnames)} in the header")
        else:
            yield where, row


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise LlamaduoError(f"{path}: no such file", "Check the path.")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LlamaduoError(f"{path} is not a valid Parquet file ({exc})", "Check the file, or pass --format.") from None
    if table.num_rows == 0:
        raise LlamaduoError(f"{path} is empty", "Point ingest at a file with rows.")
    for number, row in enumerate(table.to_pylist(), 1):
        yield f"{path}: row {number}", row


def _datasets(path: str, container: str, split: str | None) -> Iterator[Row]:
    if container == "hub":
        _require_hub(path)
    import datasets

    if container == "hf":
        try:
            loaded = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as exc:
            raise LlamaduoError(f"{path} is not a saved `datasets` folder ({exc})", "Save it with `Dataset.save_to_disk`.") from None
    else:
        try:
            loaded = datasets.load_dataset(path, split=split)
        except Exception as exc:  # the hub client raises many types (offline, 404, auth); all mean the same to the user
            raise LlamaduoError(
                f"cannot load hub dataset {path!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                "Hub ids need network access (and a token for gated sets); offline, download it elsewhere and ingest the files or a saved folder.",
            ) from None
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(split or "", loaded)]
    if isinstance(loaded, datasets.DatasetDict) and split:
        if split not in loaded:
            raise LlamaduoError(f"{path} has no split {split!r}", f"Pick one of {', '.join(loaded)}.")
        parts = [(split, loaded[split])]
    total = 0
    for name, part in parts:
        for number, row in enumerate(part, 1):
            total += 1
            yield f"{path}{'/' + name if name else ''}: row {number}", row
    if total == 0:
        raise LlamaduoError(f"{path} is empty", "Point ingest at a dataset with rows.")


def _require_hub(dataset_id: str) -> None:
    """Fail at once when the hub is unreachable, instead of after the hub client's retries (about 30 s)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("HF_DATASETS_OFFLINE") in ("1", "true", "True"):
        return  # offline mode: `datasets` serves its local cache or says what is missing
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise LlamaduoError(
            f"cannot load hub dataset {dataset_id!r}: {host} is unreachable (no network)",
            "Hub ids need network access; offline, download the dataset elsewhere and ingest its files or a saved `datasets` folder.",
        ) from None
