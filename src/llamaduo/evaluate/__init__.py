"""Evaluation: service-LLM judges (pointwise, pairwise, ensembles), judge-free metrics, sandboxed pass@k and judge-check.

Exports are lazy because `llamaduo.config` imports `llamaduo.evaluate.config` while it is itself being imported.
"""

from __future__ import annotations

from llamaduo.lazy_exports import lazy_getattr

_EXPORTS = {
    "evaluate": "llamaduo.evaluate.api",
    "EvalReport": "llamaduo.evaluate.report",
    "judge_check": "llamaduo.evaluate.calibration",
    "JudgeCheckReport": "llamaduo.evaluate.calibration",
}
__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
