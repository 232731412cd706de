"""Fine-tuning of the local model: `train(config, examples)` returns where the adapter and merged model are.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.train.config`, and an eager import here
would load the trainer on every CLI start-up (`llamaduo --help`, `status`).
"""

from __future__ import annotations

from llamaduo.lazy_exports import lazy_getattr

_EXPORTS = {
    "TrainResult": "llamaduo.train.trainer",
    "train": "llamaduo.train.trainer",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
