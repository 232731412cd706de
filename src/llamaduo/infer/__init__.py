"""Local inference over the test split: `infer(config, model)` writes one `Answer` per prompt and sample.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.infer.config`, and an eager import here
would load the runner on every CLI start-up (`llamaduo --help`, `status`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InferResult": "llamaduo.infer.runner",
    "infer": "llamaduo.infer.runner",
    "read_answers": "llamaduo.infer.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
