"""Runs inside the sandbox process: lock the process down, then run program.py from the working folder.

Started by `llamaduo.evaluate.sandbox` as `python -I _sandbox_child.py '<json settings>'`; it imports nothing
from llamaduo so that it starts fast and trusts nothing outside the standard library.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import os
import re
import resource
import socket
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
# Flags the kernel locks on mounts inherited from another namespace: a remount must repeat them or it fails.
_KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
_SKIP_PREFIXES = ("/proc", "/sys", "/dev/pts")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, flags: int) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if libc.mount(enc(source), enc(target), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def readonly_filesystem(workdir: str) -> None:
    """Make every mount read-only except the working folder (we are root of a private mount namespace).

    MS_BIND with MS_REMOUNT changes only this namespace's view of a mount, never the file system itself.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    _mount(libc, workdir, workdir, MS_BIND)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        rows = [line.split() for line in fh]
    for row in rows:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), row[4])  # mountinfo writes " " as \040
        options = row[5].split(",")
        if point == workdir or point.startswith(_SKIP_PREFIXES) or "ro" in options:
            continue
        keep = sum(flag for name, flag in _KEEP.items() if name in options)
        try:
            _mount(libc, None, point, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        except OSError:
            if point == "/":
                raise
            # A mount we cannot touch (e.g. a locked one) stays as it was; "/" must succeed.


def join_cgroup(path: str) -> None:
    """Enter the pids cgroup the parent prepared: root is exempt from RLIMIT_NPROC, not from `pids.max`."""
    with open(os.path.join(path, "cgroup.procs"), "w", encoding="ascii") as fh:
        fh.write("0")  # 0 means the writing process itself


def guard_processes() -> None:
    """Python-level guard against new processes, used only where neither RLIMIT_NPROC nor a cgroup can bound them."""

    def refuse(*args, **kwargs):
        raise PermissionError("starting processes is disabled in the llamaduo sandbox")

    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                 "spawnv", "spawnve", "spawnl", "spawnle"):
        if hasattr(os, name):
            setattr(os, name, refuse)
    import subprocess

    subprocess.Popen = refuse  # type: ignore[misc]


def set_limits(cfg: dict) -> None:
    mib = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_mb"] * mib, cfg["memory_mb"] * mib))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["file_size_mb"] * mib, cfg["file_size_mb"] * mib))
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _NoNetwork(socket.socket):
    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the llamaduo sandbox")


def block_network() -> None:
    """Python-level guard; the network namespace (when available) is the real wall."""

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the llamaduo sandbox")

    import _socket

    socket.socket = _NoNetwork  # type: ignore[misc]
    _socket.socket = _NoNetwork  # type: ignore[misc]  # the C module too, or `import _socket` walks past
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "socketpair", "fromfd"):
        setattr(socket, name, refuse)


def guard_writes(workdir: str) -> None:
    """Python-level guard against writes outside the working folder, for when no mount namespace is available."""
    real_open, real_os_open = builtins.open, os.open
    root = os.path.realpath(workdir) + os.sep

    def inside(path) -> bool:
        if isinstance(path, int):
            return True
        return (os.path.realpath(os.fspath(path)) + os.sep).startswith(root)

    def checked_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing outside the sandbox folder is not allowed: {file}")
        return real_open(file, mode, *args, **kwargs)

    def checked_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC) and not inside(path):
            raise PermissionError(f"writing outside the sandbox folder is not allowed: {path}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = checked_open
    os.open = checked_os_open
    for name in ("remove", "unlink", "rmdir", "rename", "replace", "removedirs", "chmod", "chown", "truncate"):
        original = getattr(os, name)

        def guarded(path, *args, _original=original, **kwargs):
            if not inside(path):
                raise PermissionError(f"changing files outside the sandbox folder is not allowed: {path}")
            return _original(path, *args, **kwargs)

        setattr(os, name, guarded)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    workdir = cfg["workdir"]
    # The nonce proves that the program ran to its end; it arrives on stdin, which is then closed.
    nonce = sys.stdin.readline().strip()
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    if cfg["mount_ns"]:
        readonly_filesystem(workdir)
    os.chdir(workdir)  # after the bind mount, so that the working folder is the writable mount
    if cfg["cgroup"]:
        join_cgroup(cfg["cgroup"])
    # In a PID namespace this process is init, which the kernel shields from default-action signals
    # (SIGXCPU included), so the program runs in a child and this process only relays its end.
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    set_limits(cfg)
    block_network()
    if not cfg["mount_ns"]:
        guard_writes(workdir)
    if cfg["guard_processes"]:
        guard_processes()
    source = open("program.py", encoding="utf-8").read()
    out = os.dup(1)
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as exc:
        print(f"SystemExit: the program exited ({exc.code!r}) before its tests finished", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(out, f"\n{nonce}\n".encode())
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
