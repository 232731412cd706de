"""Run folders: `runs/<run-id>/` with a manifest, an append-only event log and atomic artifacts."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from llamaduo import __version__
from llamaduo.atomic import append_line, atomic_write_json, read_jsonl
from llamaduo.errors import LlamaduoError

MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
TRACKED_PACKAGES = (
    "llamaduo", "torch", "transformers", "peft", "trl", "accelerate", "datasets",
    "openai", "anthropic", "google-genai", "datasketch", "sentence-transformers",
)


def new_run_id(name: str = "run") -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{_slug(name)}-{stamp}-{os.urandom(2).hex()}"


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")
    return keep[:40] or "run"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunFolder:
    """One run's folder. Every write is atomic; events are appended and fsynced."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @property
    def run_id(self) -> str:
        return self.root.name

    @classmethod
    def create(
        cls,
        runs_dir: str | os.PathLike[str],
        config: Any,
        *,
        run_id: str | None = None,
        seeds: dict[str, int] | None = None,
        data_hashes: dict[str, str] | None = None,
    ) -> RunFolder:
        """Create `runs_dir/<run_id>/` and write its manifest. `config` is a `Config` (secrets are redacted)."""
        run_id = run_id or new_run_id(getattr(getattr(config, "project", None), "name", "run"))
        root = Path(runs_dir) / run_id
        if (root / MANIFEST).exists():
            raise LlamaduoError(f"run {run_id} already exists in {runs_dir}", "Pick another --run-id or resume it.")
        root.mkdir(parents=True, exist_ok=True)
        run = cls(root)
        manifest = {
            "run_id": run_id,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "llamaduo_version": __version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "git_sha": git_sha(getattr(config, "base_dir", None)),
            "seeds": seeds or {},
            "data_hashes": data_hashes or {},
            "config": config.redacted() if hasattr(config, "redacted") else config,
        }
        atomic_write_json(root / MANIFEST, manifest)
        run.event("run_created", run_id=run_id)
        return run

    @classmethod
    def open(cls, runs_dir: str | os.PathLike[str], run_id: str) -> RunFolder:
        root = Path(runs_dir) / run_id
        if not (root / MANIFEST).is_file():
            raise LlamaduoError(f"no run {run_id} in {runs_dir}", "List runs with `ls runs/` or check --run.")
        return cls(root)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest
        manifest.update(fields)
        atomic_write_json(self.root / MANIFEST, manifest)

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"ts": dt.datetime.now(dt.timezone.utc).isoformat(), "event": kind, **fields}
        append_line(self.root / EVENTS, json.dumps(record, default=str, sort_keys=True))
        return record

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = read_jsonl(self.root / EVENTS)
        return [r for r in rows if kind is None or r.get("event") == kind]

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.root / name, obj)

    def path(self, name: str) -> Path:
        return self.root / name
