"""A throwaway PostgreSQL server on loopback for the capture-store tests (Debian's `postgresql` package).

As root it runs as `nobody`, since PostgreSQL refuses to run as root. Anything missing means a skip with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh server; raises RuntimeError(reason) when one cannot be started."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:
        user = "nobody"
        folder.chmod(0o777)
        for parent in folder.parents:  # nobody must be able to reach the data folder
            if str(parent).startswith(("/tmp", "/var/tmp")) and parent != Path("/tmp"):
                parent.chmod(parent.stat().st_mode | 0o011)
    data, sockdir = folder / "pgdata", folder / "sock"
    sockdir.mkdir(exist_ok=True)
    if user:
        shutil.chown(sockdir, user)
    port = _free_port()
    run = dict(capture_output=True, text=True, timeout=120, user=user, cwd=str(folder))
    done = subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], **run)
    if done.returncode:
        raise RuntimeError(f"initdb failed: {done.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(folder / "pg.log"), "-w", "-t", "60", "start"], **run)
    if started.returncode:
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], **run)
