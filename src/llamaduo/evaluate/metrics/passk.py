"""pass@k for coding tasks with unit tests: the unbiased estimator and the test programs (MBPP and HumanEval formats)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def extract_code(text: str) -> str:
    """The program inside a model's answer: the fenced Python blocks joined, else the whole text."""
    blocks = _FENCE.findall(text)
    return "\n\n".join(b.strip("\n") for b in blocks) if blocks else text


def has_tests(metadata: dict[str, Any]) -> bool:
    """Whether a test item carries unit tests in a format this module understands."""
    return bool(metadata.get("test_list")) or bool(metadata.get("test") and metadata.get("entry_point"))


def program_with_tests(code: str, metadata: dict[str, Any]) -> str:
    """The program the sandbox runs: candidate code followed by the item's tests; it exits non-zero on failure.

    MBPP items carry `test_list` (assert lines) and `test_setup_code`; HumanEval items carry `prompt`,
    `test` (defining `check`) and `entry_point`.
    """
    if metadata.get("test_list"):
        # Setup code may use the candidate's definitions (MBPP 367 builds trees of the solution's Node class).
        setup = metadata.get("test_setup_code") or ""
        tests = "\n".join(metadata["test_list"])
        return f"{code}\n\n{setup}\n{tests}\n"
    if metadata.get("test") and metadata.get("entry_point"):
        # Always prompt + code: a body-only answer completes the prompt's function; a full `def` replaces the
        # docstring-only one while still getting the prompt's imports.
        body = (metadata.get("prompt") or "") + code
        return f"{body}\n\n{metadata['test']}\n\ncheck({metadata['entry_point']})\n"
    raise ValueError("the item has no unit tests (test_list, or test + entry_point)")
