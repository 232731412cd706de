"""Evaluation: service-LLM judges (pointwise, pairwise, ensembles), judge-free metrics, sandboxed pass@k and judge-check.

Exports are lazy because `llamaduo.config` imports `llamaduo.evaluate.config` while it is itself being imported.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "evaluate": "llamaduo.evaluate.api",
    "EvalReport": "llamaduo.evaluate.report",
    "judge_check": "llamaduo.evaluate.calibration",
    "JudgeCheckReport": "llamaduo.evaluate.calibration",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
