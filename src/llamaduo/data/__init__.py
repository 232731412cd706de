"""The coverage dataset: ingest, frozen split, versioned store, stats and the dedup/decontamination gates.

Exports resolve lazily: `llamaduo.config` imports `llamaduo.data.config`, which must not pull in
the stage modules (they import the config back).
"""

from __future__ import annotations

from llamaduo.lazy_exports import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
