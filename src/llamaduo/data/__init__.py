"""The coverage dataset: ingest, frozen split, versioned store, stats and the dedup/decontamination gates.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.data.config`, which must not pull in
the stage modules (they import the config back).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetStore": "llamaduo.data.store",
    "VersionInfo": "llamaduo.data.store",
    "IngestReport": "llamaduo.data.ingestion",
    "ingest": "llamaduo.data.ingestion",
    "SplitReport": "llamaduo.data.splitting",
    "split": "llamaduo.data.splitting",
    "dataset_stats": "llamaduo.data.stats",
    "PairFilter": "llamaduo.data.hygiene",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
