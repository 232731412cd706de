"""Synthetic data: task templates, the generator loop through the service layer, and the quality gates.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.synth.config`, which must not pull in the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_synth": "llamaduo.synth.engine",
    "SynthReport": "llamaduo.synth.engine",
    "apply_gates": "llamaduo.synth.gates",
    "GateReport": "llamaduo.synth.gates",
    "GatePipeline": "llamaduo.synth.gates",
    "load_template": "llamaduo.synth.templating",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
