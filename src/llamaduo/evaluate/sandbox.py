"""A sandbox for model-written code: a separate process with time, CPU, memory, file-size and process limits,
no network, a read-only file system outside a temporary folder, and a scrubbed environment.

Layers (docs/evaluation.md): util-linux `unshare` gives new network, mount and PID namespaces where the kernel
allows them; the child (`_sandbox_child.py`) then remounts everything read-only except its folder, sets rlimits
and blocks sockets at the Python level. Root, whom RLIMIT_NPROC exempts, is bounded by a pids cgroup instead.
Without namespaces (or the cgroup) Python-level guards stand in, and `Sandbox.isolation` says so.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError
from llamaduo.evaluate.config import SandboxConfig

CHILD = Path(__file__).with_name("_sandbox_child.py")
TAIL = 2000
# Environment the child sees: nothing from ours (API keys live there), just enough to run Python.
_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
_SIGNAL_REASONS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGKILL: "killed (memory limit or timeout)",
    signal.SIGSEGV: "crashed (segmentation fault, often the memory limit)",
}

Status = Literal["passed", "failed", "timeout", "error"]


class SandboxResult(BaseModel):
    status: Status
    reason: str = ""
    """Why it did not pass: the last line of the traceback, the limit that was hit, or the timeout."""
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@lru_cache(maxsize=4)
def namespace_command(as_root: bool) -> tuple[str, ...] | None:
    """The `unshare` prefix that works on this machine, or None (no util-linux, or the kernel refuses)."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    # Unprivileged users need a user namespace to create the others; real root does not.
    user = () if as_root else ("--user", "--map-root-user")
    cmd = (exe, *user, "--net", "--mount", "--pid", "--fork", "--kill-child")
    try:
        ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return cmd if ok else None


def _user_tasks(uid: int) -> int:
    """Processes and threads this uid already runs: RLIMIT_NPROC counts them all, not just the sandbox's."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _pids_cgroup_root() -> Path | None:
    """Our own cgroup in the `pids` hierarchy (v1 or v2), if we may create children in it."""
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, rel = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids") / rel.lstrip("/")
        elif controllers == "" and "pids" in _read(Path("/sys/fs/cgroup") / rel.lstrip("/") / "cgroup.controllers"):
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        else:
            continue
        if base.is_dir() and os.access(base, os.W_OK):
            return base
    return None


class Sandbox:
    """Runs Python programs under `SandboxConfig` limits; thread-safe, one child process per program."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        as_root = os.geteuid() == 0
        wanted = self.config.isolate
        self.prefix = namespace_command(as_root) if wanted in ("auto", "namespaces") else None
        if wanted == "namespaces" and self.prefix is None:
            raise LlamaduoError(
                "evaluate.sandbox.isolate is `namespaces` but this kernel refuses new namespaces (or `unshare` is missing)",
                "Install util-linux, allow unprivileged user namespaces, or set evaluate.sandbox.isolate=auto",
            )
        self.nproc = _user_tasks(os.getuid()) + self.config.max_processes
        # RLIMIT_NPROC never binds root, so root gets a pids cgroup per program, or a Python-level guard.
        self.cgroup_root = _pids_cgroup_root() if as_root else None
        self.guard_processes = as_root and self.cgroup_root is None

    @property
    def isolation(self) -> str:
        """A short description of the walls in place, for reports."""
        walls = ["rlimits", "python socket block"]
        walls += ["network/mount/pid namespaces", "read-only file system"] if self.prefix else ["python write guard"]
        if self.cgroup_root is not None:
            walls.append("pids cgroup")
        elif self.guard_processes:
            walls.append("python process guard")
        return ", ".join(walls)

    def run(self, program: str) -> SandboxResult:
        """Run one program; `passed` means it ran to its end without an exception."""
        cfg = self.config
        workdir = tempfile.mkdtemp(prefix="llamaduo-sandbox-")
        cgroup = self._make_cgroup(Path(workdir).name)
        started = time.monotonic()
        try:
            Path(workdir, "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
            settings = {
                "workdir": workdir, "mount_ns": self.prefix is not None, "cgroup": str(cgroup) if cgroup else None,
                "guard_processes": self.guard_processes, "cpu_s": cfg.cpu_s, "memory_mb": cfg.memory_mb,
                "file_size_mb": cfg.file_size_mb, "nproc": self.nproc,
            }
            cmd = [*(self.prefix or ()), sys.executable, "-I", str(CHILD), json.dumps(settings)]
            nonce = secrets.token_hex(16)
            env = {**_CLEAN_ENV, "HOME": workdir, "TMPDIR": workdir}
            # Output goes to files capped by RLIMIT_FSIZE, so a program printing forever cannot fill our memory.
            with open(Path(workdir, ".stdout"), "wb+") as out, open(Path(workdir, ".stderr"), "wb+") as err:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir, env=env, start_new_session=True
                )
                proc.stdin.write((nonce + "\n").encode())
                proc.stdin.close()
                # A timer kills the tree at the deadline while we block in waitpid: Popen.wait(timeout=...)
                # polls with sleeps, which costs more than the typical program takes to run.
                fired = threading.Event()
                timer = threading.Timer(cfg.timeout_s, lambda: (fired.set(), _kill_tree(proc)))
                timer.start()
                try:
                    proc.wait()
                finally:
                    timer.cancel()
                timed_out = fired.is_set()
                stdout, stderr = _tail(out), _tail(err)
            status, reason = _verdict(proc.returncode, timed_out, nonce, stdout, stderr, cfg.timeout_s)
            return SandboxResult(
                status=status, reason=reason, duration_s=round(time.monotonic() - started, 4),
                stdout_tail=stdout.replace(nonce, "").strip()[-TAIL:], stderr_tail=stderr.strip()[-TAIL:],
            )
        except (OSError, UnicodeError) as exc:
            return SandboxResult(status="error", reason=f"could not run the sandbox: {exc}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if cgroup is not None:
                _remove_cgroup(cgroup)

    def run_many(self, programs: Iterable[str], workers: int | None = None) -> list[SandboxResult]:
        """Run programs side by side; results keep the input order.

        Threads suffice as workers: each only waits on its own child process, and the children run in parallel.
        """
        items = list(programs)
        workers = workers or self.config.workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items) or 1))) as pool:
            return list(pool.map(self.run, items))

    def _make_cgroup(self, name: str) -> Path | None:
        if self.cgroup_root is None:
            return None
        path = self.cgroup_root / name
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(self.config.max_processes))
        except OSError:
            return None
        return path


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the session; with a PID namespace, killing its first process takes every descendant with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_cgroup(path: Path) -> None:
    """rmdir succeeds once the last process has left; killed processes may take a moment to be reaped."""
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _tail(fh) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - 4 * TAIL))
    return fh.read().decode("utf-8", errors="replace")


def _verdict(code: int, timed_out: bool, nonce: str, stdout: str, stderr: str, timeout_s: float) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"wall-clock timeout after {timeout_s:g} s"
    if code == 0 and nonce in stdout:
        return "passed", ""
    if code < 0 or code > 128:
        signum = -code if code < 0 else code - 128
        try:
            return "failed", _SIGNAL_REASONS.get(signal.Signals(signum), f"killed by {signal.Signals(signum).name}")
        except ValueError:
            return "failed", f"killed by signal {signum}"
    if code == 0:
        return "failed", "the program exited before its tests finished"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return "failed", (lines[-1][:300] if lines else f"exit code {code}")
