"""Fine-tuning of the local model: `train(config, examples)` returns where the adapter and merged model are.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.train.config`, and an eager import here
would load the trainer on every CLI start-up (`llamaduo --help`, `status`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainResult": "llamaduo.train.trainer",
    "train": "llamaduo.train.trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
