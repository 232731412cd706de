"""An exclusive lock on a run folder, so two `llamaduo run` commands never drive the same run."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from llamaduo.errors import LlamaduoError


class RunLock:
    """flock-based: the kernel drops it when the holder dies, so a kill -9 never leaves a stale lock."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LlamaduoError(
                f"run folder {self.path.parent} is locked by pid {holder}",
                "Wait for that run to finish, or stop it; two runs cannot share a folder.",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
