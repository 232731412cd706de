"""Local inference over the test split: `infer(config, model)` writes one `Answer` per prompt and sample.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.infer.config`, and an eager import here
would load the runner on every CLI start-up (`llamaduo --help`, `status`).
"""

from __future__ import annotations

from llamaduo.lazy_exports import lazy_getattr

_EXPORTS = {
    "InferResult": "llamaduo.infer.runner",
    "infer": "llamaduo.infer.runner",
    "read_answers": "llamaduo.infer.runner",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
