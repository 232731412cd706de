"""The versioned dataset store: one Parquet file plus one manifest per version, and an index of the latest.

Layout under `data.store`: `versions/<id>.parquet`, `versions/<id>.json` (rows, content hash, parents,
stage) and `index.json` (latest version per split, the frozen test hash). Every write is atomic and
the index is updated last, so a crash leaves at worst an unreferenced file, never a broken version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from llamaduo.atomic import atomic_path, atomic_write_json
from llamaduo.errors import LlamaduoError
from llamaduo.records import Example

SPLITS = ("raw", "train", "test", "synthetic")
INDEX = "index.json"
_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        (
            "messages",
            pa.list_(
                pa.struct(
                    [
                        ("role", pa.string()),
                        ("content", pa.string()),
                        ("tool_calls", pa.string()),  # JSON text of the OpenAI list; null on turns without calls
                        ("tool_call_id", pa.string()),
                    ]
                )
            ),
        ),
        ("source", pa.string()),
        ("metadata", pa.string()),  # JSON text: metadata differs per source, Parquet needs one schema
        ("tools", pa.string()),  # JSON text of the tool definitions offered; null when none
    ]
)


class VersionInfo(BaseModel):
    """The manifest of one dataset version."""

    id: str
    split: str
    stage: str
    """What produced it: ingest, split, synth, ..."""
    rows: int
    content_hash: str
    """sha256 over the rows in id order; equal hashes mean equal data."""
    parents: list[str] = Field(default_factory=list)
    created_at: str
    tasks: dict[str, int] = Field(default_factory=dict)
    sources: dict[str, int] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


def content_hash(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.id):
        # sort_keys: metadata read back from Parquet may list its keys in another order.
        digest.update(json.dumps(ex.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


class DatasetStore:
    """Versioned splits (`raw`, `train`, `test`, `synthetic`) of one project."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    # ---- reading ---------------------------------------------------------------------------

    def _index(self) -> dict[str, Any]:
        path = self.root / INDEX
        if not path.is_file():
            return {"latest": {}, "versions": [], "frozen_test": None}
        return json.loads(path.read_text(encoding="utf-8"))

    def latest(self, split: str) -> str | None:
        """Id of the newest version of a split, or None."""
        _check_split(split)
        return self._index()["latest"].get(split)

    def versions(self, split: str | None = None) -> list[VersionInfo]:
        infos = [self.info(v) for v in self._index()["versions"]]
        return [i for i in infos if split is None or i.split == split]

    def info(self, version: str) -> VersionInfo:
        path = self.root / "versions" / f"{version}.json"
        if not path.is_file():
            raise LlamaduoError(f"no dataset version {version} in {self.root}", "List versions with `llamaduo data stats`.")
        return VersionInfo.model_validate_json(path.read_text(encoding="utf-8"))

    def parquet_path(self, version: str) -> Path:
        return self.root / "versions" / f"{version}.parquet"

    def examples(self, split: str, version: str | None = None) -> list[Example]:
        """The rows of a version (default: the latest of `split`); empty if the split has none yet."""
        version = version or self.latest(split)
        if version is None:
            return []
        path = self.parquet_path(version)
        if not path.is_file():
            raise LlamaduoError(f"dataset file {path} is missing", "Restore the store folder or re-run ingest and split.")
        rows = pq.read_table(path).to_pylist()
        # Versions written before tool calling have neither the `tools` column nor the tool fields of messages.
        return [
            Example(
                id=r["id"],
                task=r["task"],
                messages=[_message_in(m) for m in r["messages"]],
                tools=json.loads(r["tools"]) if r.get("tools") else None,
                source=r["source"] or "",
                metadata=json.loads(r["metadata"] or "{}"),
            )
            for r in rows
        ]

    # ---- the frozen test split ------------------------------------------------------------

    def test_hash(self) -> str | None:
        """Content hash of the frozen test split (None before `llamaduo data split`)."""
        frozen = self._index().get("frozen_test")
        return frozen["hash"] if frozen else None

    def check_test_frozen(self) -> str:
        """Verify the test split on disk is the one frozen by `data split`; return its hash."""
        frozen = self._index().get("frozen_test")
        if not frozen:
            raise LlamaduoError(f"no frozen test split in {self.root}", "Run `llamaduo data ingest` then `llamaduo data split`.")
        version = self.latest("test")
        if version != frozen["version"]:
            raise LlamaduoError(
                f"the test split changed since it was frozen (version {version}, frozen {frozen['version']})",
                "Restore the frozen test version; scores on a changed test split are not comparable.",
            )
        actual = content_hash(self.examples("test", version))
        if actual != frozen["hash"]:
            raise LlamaduoError(
                f"the frozen test data in {self.parquet_path(version)} was modified (hash {actual[:12]}, frozen {frozen['hash'][:12]})",
                "Restore the original file; scores on a changed test split are not comparable.",
            )
        return actual

    # ---- writing ---------------------------------------------------------------------------

    def write(
        self,
        split: str,
        examples: Sequence[Example],
        *,
        stage: str,
        parents: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Write a new version of `split` and make it the latest; returns its id. The test split is write-once."""
        if split == "test" and self.test_hash() is not None:
            raise LlamaduoError("the test split is frozen", "Later stages must not rewrite it; start a new store to re-split.")
        return self._write(split, examples, stage=stage, parents=parents, extra=extra)

    def freeze_test(self, examples: Sequence[Example], *, parents: Sequence[str] = (), extra: dict[str, Any] | None = None) -> str:
        """Write the test split and record its hash; only `data split` calls this."""
        return self._write("test", examples, stage="split", parents=parents, extra=extra, freeze=True)

    def _write(
        self,
        split: str,
        examples: Sequence[Example],
        *,
        stage: str,
        parents: Sequence[str],
        extra: dict[str, Any] | None,
        freeze: bool = False,
    ) -> str:
        _check_split(split)
        digest = content_hash(examples)
        with self._locked():
            index = self._index()
            number = sum(1 for v in index["versions"] if v.startswith(f"{split}-")) + 1
            version = f"{split}-{number:04d}-{digest[:8]}"
            table = pa.Table.from_pylist(
                [
                    {
                        "id": e.id,
                        "task": e.task,
                        "messages": [_message_out(m.model_dump()) for m in e.messages],
                        "source": e.source,
                        "metadata": json.dumps(e.metadata, sort_keys=True, default=str, ensure_ascii=False),
                        "tools": json.dumps(e.tools, ensure_ascii=False) if e.tools else None,
                    }
                    for e in examples
                ],
                schema=_SCHEMA,
            )
            with atomic_path(self.parquet_path(version), suffix=".parquet") as tmp:
                pq.write_table(table, tmp, compression="zstd")
            info = VersionInfo(
                id=version,
                split=split,
                stage=stage,
                rows=len(examples),
                content_hash=digest,
                parents=[p for p in parents if p],
                created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                tasks=dict(sorted(Counter(e.task for e in examples).items())),
                sources=dict(sorted(Counter(e.source for e in examples).items())),
                extra=extra or {},
            )
            atomic_write_json(self.root / "versions" / f"{version}.json", info.model_dump(mode="json"))
            index["versions"].append(version)
            index["latest"][split] = version
            if freeze:
                index["frozen_test"] = {"version": version, "hash": digest, "frozen_at": info.created_at}
            atomic_write_json(self.root / INDEX, index)
        return version

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: two processes must not both append version N."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _message_out(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    return {**message, "tool_calls": json.dumps(calls, ensure_ascii=False) if calls else None}


def _message_in(row: dict[str, Any]) -> dict[str, Any]:
    message = {"role": row["role"], "content": row["content"]}
    if row.get("tool_calls"):
        message["tool_calls"] = json.loads(row["tool_calls"])
    if row.get("tool_call_id"):
        message["tool_call_id"] = row["tool_call_id"]
    return message


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise LlamaduoError(f"unknown split {split!r}", f"Use one of {', '.join(SPLITS)}.")
