"""Config of evaluation: the judge rubric, repeats, thresholds, judge-free metrics, the sandbox and the pass/fail target."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaduo.configbase import Section


class SandboxConfig(Section):
    """Limits of the sandbox that runs model-written code for pass@k."""

    timeout_s: float = Field(20.0, gt=0, le=600)
    """Wall-clock seconds one program may run before its whole process tree is killed."""
    cpu_s: int = Field(10, ge=1, le=600)
    """CPU seconds (RLIMIT_CPU)."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space limit in MiB (RLIMIT_AS)."""
    file_size_mb: int = Field(16, ge=1)
    """Largest file the program may write, in MiB (RLIMIT_FSIZE)."""
    max_processes: int = Field(64, ge=1)
    """Processes/threads the program may start: RLIMIT_NPROC above what its user already runs, or for root (whom
    RLIMIT_NPROC does not bind) the `pids.max` of a per-program pids cgroup."""
    workers: int = Field(0, ge=0)
    """Programs run side by side (0: one per CPU core)."""
    isolate: Literal["auto", "namespaces", "python"] = "auto"
    """`namespaces`: new network, mount and PID namespaces via util-linux `unshare` (the file system is read-only except the
    working folder); `python`: limits plus Python-level guards only; `auto`: namespaces when the kernel permits them."""


class EvalConfig(Section):
    """How answers are judged and what counts as good enough."""

    repeats: int = Field(3, ge=1, le=50)
    """M judgments per answer (the paper used 10)."""
    thresholds: list[float] = Field(default_factory=lambda: [50.0, 70.0])
    """Coverage % is the share of scores at or above each threshold."""
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    """pointwise: 0-100 similarity and precision; pairwise: against the service LLM's own answer, both orders."""
    ensemble: Literal["mean", "median"] = "mean"
    """How several judges' scores combine."""
    judge: bool = True
    """Ask the service-LLM judges; false computes only the judge-free metrics (no cost)."""
    judge_sample: int | None = Field(None, ge=1)
    """Ask the judges about only this many prompts, the same ones at every iteration (picked by a hash of the example id);
    the judge-free metrics still score every answer (none: judge all). Cuts judge cost; the judged CIs widen."""
    rubric: str | None = None
    """Path of a Jinja rubric that overrides the built-in one (blocks `rubric` and `item`; see docs/evaluation.md)."""
    rubric_version: str = "v1"
    """Which built-in rubric to use when `rubric` is not set."""
    parse_retries: int = Field(2, ge=0, le=10)
    """Extra requests for a judgment whose reply could not be parsed, before it is recorded as failed."""
    max_candidate_chars: int = Field(8000, ge=100)
    """Candidate, reference and instruction text longer than this is cut (and marked) before it reaches the judge."""
    metrics: list[str] = Field(
        default_factory=lambda: ["rouge_l", "embedding", "exact_match", "token_f1", "pass_at_k", "tool_decision", "tool_name", "tool_args_exact", "tool_schema_valid"]
    )
    """Judge-free metrics; each is computed for the answers it applies to (a reference, a label, unit tests, or tools offered)."""
    pass_k: list[int] = Field(default_factory=lambda: [1])
    """k values of pass@k (k must not exceed the K samples per prompt)."""
    target: dict[str, float] = Field(default_factory=lambda: {"precision.mean": 70.0, "precision.coverage@50": 0.8})
    """Pass rule: every `metric.stat` must reach its value (stats: mean, median, coverage@T as a 0-1 share)."""
    bootstrap: int = Field(1000, ge=100)
    """Bootstrap resamples for the 95% confidence intervals."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """Limits of the sandbox that runs model-written code for pass@k."""
    judge_check_sample: int = Field(100, ge=1)
    """Items drawn from each human-labelled set by `llamaduo judge-check` (keeps the check cheap)."""
