"""Synthetic data: task templates, the generator loop through the service layer, and the quality gates.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.synth.config`, which must not pull in the engine.
"""

from __future__ import annotations

from llamaduo.lazy_exports import lazy_getattr

_EXPORTS = {
    "run_synth": "llamaduo.synth.engine",
    "SynthReport": "llamaduo.synth.engine",
    "apply_gates": "llamaduo.synth.gates",
    "GateReport": "llamaduo.synth.gates",
    "GatePipeline": "llamaduo.synth.gates",
    "load_template": "llamaduo.synth.templating",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
