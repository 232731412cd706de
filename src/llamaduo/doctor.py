"""`llamaduo doctor`: what works on this machine, one record per capability, with the fix for what does not.

"fail" is kept for what the main job (the loop: train, infer, judge) cannot run without; everything optional
(GPU, llama.cpp, the GGUF converter, Ollama) is at worst "warn". No check makes a paid call unless asked.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from llamaduo.errors import LlamaduoError

Status = Literal["ok", "warn", "fail"]
GB = 1024**3
# SmolLM2-135M's projection: a batch of 256 token rows times hidden 576 -> intermediate 1536, the matmul that
# dominates its training and batched inference on CPU.
MATMUL_SHAPE = (256, 576, 1536)
MATMUL_SECONDS = 0.4  # per dtype: about 1 s in all with the warm-up
DISK_FAIL_GB, DISK_WARN_GB = 2.0, 10.0
MEMORY_FAIL_GB, MEMORY_WARN_GB = 1.0, 4.0
# Where a role without base_url sends its requests; a GET there without a key costs nothing.
DEFAULT_ENDPOINTS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
TRAIN_STACK = ("torch", "transformers", "peft", "trl")


class Check(BaseModel):
    """One capability: its status, what was found, and the fix when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


def _check(name: str, status: Status, detail: str, fix: str | None = None) -> Check:
    return Check(name=name, status=status, detail=detail, fix=fix if status != "ok" else None)


def check_cpu() -> Check:
    from llamaduo.infer.native import cpu_info

    cpu = cpu_info()
    where = " in a VM" if cpu.virtualized else ""
    detail = f"{cpu.model} ({cpu.arch}{where}): {' '.join(cpu.features) or 'no SIMD features reported'}"
    if cpu.arch in ("x86_64", "AMD64") and "avx2" not in cpu.features:
        return _check("cpu", "warn", detail, "Without AVX2, llama.cpp and torch use slow kernels; expect several times longer runs")
    return _check("cpu", "ok", detail)


def check_train_stack() -> Check:
    missing = [m for m in TRAIN_STACK if importlib.util.find_spec(m) is None]
    if missing:
        return _check("training stack", "fail", f"missing: {', '.join(missing)}", "Install it with `pip install 'llamaduo[train]'`")
    import torch

    return _check("training stack", "ok", f"torch {torch.__version__}, transformers {_version('transformers')}, peft {_version('peft')}, trl {_version('trl')}")


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def check_matmul(seconds: float = MATMUL_SECONDS) -> Check:
    """bf16 against fp32 matmul speed at the student's shapes, and whether precision `auto` picks the faster one."""
    if importlib.util.find_spec("torch") is None:
        return _check("bf16 matmul", "warn", "torch is not installed", "Install it with `pip install 'llamaduo[train]'`")
    import torch

    from llamaduo.train.device import bf16_supported

    rows, inner, cols = MATMUL_SHAPE
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        torch.matmul(a, b)  # warm-up: first call allocates and picks the kernel
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            torch.matmul(a, b)
            count += 1
        rates[dtype] = 2 * rows * inner * cols * count / (time.perf_counter() - started) / 1e9
    fp32, bf16 = rates[torch.float32], rates[torch.bfloat16]
    auto = "bf16" if bf16_supported("auto") else "fp32"
    detail = f"bf16 {bf16:.0f} GFLOP/s, fp32 {fp32:.0f} GFLOP/s ({bf16 / fp32:.2f}x) at {rows}x{inner}x{cols}; precision auto uses {auto}"
    if auto == "bf16" and bf16 < 0.8 * fp32:
        return _check("bf16 matmul", "warn", detail, "bf16 is slower here: set train.precision=fp32 and infer.precision=fp32")
    if auto == "fp32" and bf16 > 1.5 * fp32:
        return _check("bf16 matmul", "warn", detail, "bf16 is faster here: set train.precision=bf16 and infer.precision=bf16")
    return _check("bf16 matmul", "ok", detail)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        return os.cpu_count() or 1


def check_threads() -> Check:
    if importlib.util.find_spec("torch") is None:
        return _check("torch threads", "warn", "torch is not installed", "Install it with `pip install 'llamaduo[train]'`")
    import torch

    threads, cores = torch.get_num_threads(), usable_cores()
    detail = f"{threads} threads on {cores} usable cores" + (f" (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})" if "OMP_NUM_THREADS" in os.environ else "")
    if threads > cores:
        return _check("torch threads", "warn", detail, f"More threads than cores slow every matmul: export OMP_NUM_THREADS={cores}")
    return _check("torch threads", "ok", detail)


def check_gpu() -> list[Check]:
    cuda = importlib.util.find_spec("torch") is not None and _cuda()
    vllm = importlib.util.find_spec("vllm") is not None
    if cuda:
        import torch

        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        gpu = _check("gpu", "ok", f"{names}; CUDA {torch.version.cuda}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        gpu = _check("gpu", "warn", "none visible: training and inference run on the CPU",
                     "Nothing needed for SmolLM2-size students; for 1B+ models use a machine with a CUDA GPU and a CUDA build of torch")
    if vllm:
        engine = _check("vllm", "ok", f"vllm {_version('vllm')} installed")
    else:
        engine = _check("vllm", "warn", "not installed: local inference uses transformers or llama.cpp",
                        "On a CUDA machine, `pip install vllm`, start `vllm serve MODEL` and set infer.backend=openai, infer.endpoints=[URL]"
                        if cuda else "Only useful with a CUDA GPU")
    return [gpu, engine]


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def check_llamacpp(fresh: bool = False) -> Check:
    from llamaduo.infer.native import ENV_SAFE, llamacpp_probe

    if importlib.util.find_spec("llama_cpp") is None:
        return _check("llama.cpp", "warn", "llama-cpp-python is not installed: no GGUF export parity or `serve --engine llamacpp`",
                      "Install it with `pip install 'llamaduo[llamacpp]'` (compiles llama.cpp; see docs/deploy.md)")
    try:
        record = llamacpp_probe(fresh)
    except LlamaduoError as exc:
        return _check("llama.cpp", "warn", exc.problem, exc.fix)
    last = record.attempts[-1] if record.attempts else None
    how = f"{last.detail} in {last.seconds:.1f} s, weights in {', '.join(last.buffers) or '?'}" if last else record.reason
    when = {"probe": "probed now", "cache": f"probed {record.checked_at}", "env": f"${ENV_SAFE} set"}[record.source]
    detail = f"llama-cpp-python {record.llama_cpp_version}: {record.path} path ({how}; {when})"
    if record.path == "fast":
        return _check("llama.cpp", "ok", detail)
    if record.path == "safe":
        return _check("llama.cpp", "warn", f"{detail}; {record.reason}",
                      "Nothing to do: the safe path (no extra buffer types) is used automatically; after updating llama-cpp-python run `llamaduo doctor --fresh`")
    return _check("llama.cpp", "warn", f"{detail}: {record.reason}",
                  "Rebuild llama-cpp-python on this machine (see docs/deploy.md) or use the transformers engine")


def check_converter() -> Check:
    from llamaduo.deploy.converter import find_converter

    try:
        return _check("gguf converter", "ok", str(find_converter()))
    except LlamaduoError as exc:
        return _check("gguf converter", "warn", exc.problem + ": `llamaduo export --format gguf` cannot run", exc.fix)


def check_ollama() -> Check:
    path = shutil.which("ollama")
    if path:
        return _check("ollama", "ok", path)
    return _check("ollama", "warn", "not on PATH: `export --format ollama` writes the Modelfile, but cannot register it",
                  "Install Ollama from https://ollama.com, then `ollama create NAME -f Modelfile` in the export folder")


def check_disk(folder: Path) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / GB
    detail = f"{free:.1f} GB free in {folder}"
    fix = "Free space there or point project.workdir at a larger disk: each iteration writes checkpoints and merged models"
    if free < DISK_FAIL_GB:
        return _check("disk", "fail", detail, fix)
    return _check("disk", "warn" if free < DISK_WARN_GB else "ok", detail, fix)


def available_memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB
    except (ValueError, OSError, AttributeError):
        return None


def check_memory() -> Check:
    free = available_memory_gb()
    if free is None:
        return _check("memory", "warn", "free memory could not be read on this system", "Make sure about 4 GB are free for training SmolLM2")
    detail = f"{free:.1f} GB available"
    fix = "Close other programs, or train a smaller student with a smaller train.batch_size"
    if free < MEMORY_FAIL_GB:
        return _check("memory", "fail", detail, fix)
    return _check("memory", "warn" if free < MEMORY_WARN_GB else "ok", detail, fix)


def check_service_roles(config: Any, *, paid: bool = False, timeout_s: float = 5.0) -> list[Check]:
    """Per role: the key is present and the endpoint answers HTTP (a keyless GET); with `paid`, the real structured probe."""
    import httpx

    from llamaduo.service.check import roles_of
    from llamaduo.service.client import model_for_role
    from llamaduo.service.keys import LOCAL_PLACEHOLDER_KEY, resolve_key

    reached: dict[str, str | None] = {}
    checks = []
    for role, index, label in roles_of(config):
        model = model_for_role(config, role, index)
        name = f"service {label}"
        what = f"{model.provider}/{model.model}"
        try:
            key_file = config.path(model.api_key_file) if model.api_key_file else None
            key = resolve_key(model.key_env, key_file, model.base_url, label)
        except LlamaduoError as exc:
            checks.append(_check(name, "fail", f"{what}: {exc.problem}", exc.fix))
            continue
        url = (model.base_url or DEFAULT_ENDPOINTS.get(model.provider, "")).rstrip("/")
        if url not in reached:
            reached[url] = _unreachable(httpx, f"{url}/models", timeout_s)
        if reached[url]:
            checks.append(_check(name, "fail", f"{what}: cannot reach {url} ({reached[url]})",
                                 f"Check service.{label}.base_url and the network (proxy, firewall)"))
        else:
            has_key = "no key needed (local server)" if key == LOCAL_PLACEHOLDER_KEY else "key present"
            checks.append(_check(name, "ok", f"{what}: {has_key}, {url} reachable"))
    if paid:
        checks = _merge_paid(config, checks)
    return checks


def _unreachable(httpx: Any, url: str, timeout_s: float) -> str | None:
    """None when the server answers HTTP at all (401 and 404 included); else why not."""
    try:
        httpx.get(url, timeout=timeout_s, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
    return None


def _merge_paid(config: Any, checks: list[Check]) -> list[Check]:
    from llamaduo.service import run_sync
    from llamaduo.service.check import check_service

    merged = []
    for check, result in zip(checks, run_sync(check_service(config))):
        if check.status == "fail":
            merged.append(check)
        elif result.ok:
            merged.append(check.model_copy(update={"detail": f"{check.detail}; answered the probe in {result.latency_s:.2f} s for ${result.cost_usd:.6f}"}))
        else:
            merged.append(_check(check.name, "fail", f"{check.detail}; the probe failed: {result.problem}", result.fix))
    return merged


def run_doctor(config: Any | None, *, check_service: bool = False, fresh: bool = False,
               matmul: Callable[[], Check] = check_matmul) -> list[Check]:
    """Every check, in the order printed. `config` None: no config file here, so no service roles to check."""
    checks = [check_cpu(), matmul(), check_threads(), *check_gpu(), check_train_stack(), check_llamacpp(fresh),
              check_converter(), check_ollama(), check_disk(config.workdir if config is not None else Path.cwd()), check_memory()]
    if config is None:
        checks.append(_check("service", "warn", "no llamaduo.yaml here: service roles not checked",
                             "Run `llamaduo init` (or pass --config PATH); `llamaduo demo` runs without one"))
    else:
        checks += check_service_roles(config, paid=check_service)
    return checks
