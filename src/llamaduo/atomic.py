"""Crash-safe file writes: write a temp file beside the target, fsync, then rename over it.

A reader (or a resumed run) never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any


# New files get 0o666 less the umask, as `open()` would give them; `tempfile.mkstemp` would make every
# result 0600. Callers writing secrets pass PRIVATE.
DEFAULT_MODE = 0o666
PRIVATE = 0o600


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "", *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it onto `path`.

    For writers that want a filename (parquet, safetensors). On error the temp file is removed.
    The result keeps an existing target's permissions; a new one gets `mode` (default: 0o666 less the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(target, suffix or ".tmp", mode)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            if tmp_path.is_dir():
                import shutil

                shutil.rmtree(tmp_path, ignore_errors=True)
            else:
                tmp_path.unlink(missing_ok=True)


def _create_temp(target: Path, suffix: str, mode: int | None) -> Path:
    """Create an empty, uniquely named temp file beside `target`, with the permissions the result should have."""
    try:
        keep = stat.S_IMODE(target.stat().st_mode) if mode is None else None
    except OSError:
        keep = None  # no target yet
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{os.urandom(4).hex()}{suffix}"
        try:
            # O_EXCL: never reuse another writer's temp file; the kernel applies the umask to the mode.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DEFAULT_MODE if mode is None else mode)
        except FileExistsError:
            continue
        try:
            if keep is not None:
                os.fchmod(fd, keep)  # rewriting a file the user made private keeps it private
            elif mode is not None:
                os.fchmod(fd, mode)  # an explicit mode is exact, whatever the umask
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temp file beside {target}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line durably. A crash can at worst leave a torn last line, which readers skip."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "ab") as fh:
        # After a kill mid-write the file may end in a torn line: end it, so this record is not glued onto it.
        if fh.tell() > 0:
            with open(target, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    fh.write(b"\n")
        fh.write(line.rstrip("\n").encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines log, skipping a torn final line left by a crash."""
    rows: list[dict[str, Any]] = []
    target = Path(path)
    if not target.exists():
        return rows
    for line in target.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
