"""Near-duplicate detection: datasketch MinHash signatures computed in numpy batches, indexed by LSH banding.

Near-duplicates are clustered greedily: the first pair of a cluster is its representative and
stays; later members are dropped with a pointer to it (never both members, unlike the paper's code).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from datasketch import MinHash, MinHashLSH

from llamaduo.data.text import TokenBatch

SCHEME = "affine32"
NUM_PERM = 128
# Word bigrams: one edited word changes at most 2 shingles, so copies with a few edited words stay
# above the threshold (benchmarks/dedup_scale.py), while word order still matters, unlike single words.
SHINGLE = 2
# Shingles processed per vectorised step: (permutations x shingles) uint32 stays cache-sized.
_CHUNK = 16_384
_EMPTY = np.iinfo(np.uint32).max


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: the pre-mix datasketch's affine32 scheme applies to each input hash."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


class MinHasher:
    """Computes datasketch-compatible (affine32) MinHash signatures for a whole `TokenBatch` at once.

    Row i equals `MinHash(num_perm, seed, hashfunc=int).update_batch(shingles of doc i)`, but in one
    vectorised pass per chunk instead of Python work per shingle (a test checks the equality).
    """

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1, shingle: int = SHINGLE):
        self.num_perm = num_perm
        self.seed = seed
        self.shingle = shingle
        perms = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self._a = np.asarray(perms[0], dtype=np.uint32)[:, None]
        self._b = np.asarray(perms[1], dtype=np.uint32)[:, None]

    def shingle_hashes(self, batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
        grams, doc_of = batch.shingles(self.shingle)
        return (grams ^ (grams >> np.uint64(32))).astype(np.uint32), doc_of

    def signatures(self, batch: TokenBatch) -> np.ndarray:
        """One row of `num_perm` uint32 minimums per document; an empty document keeps the all-max row."""
        hashes, doc_of = self.shingle_hashes(batch)
        out = np.full((len(batch), self.num_perm), _EMPTY, dtype=np.uint32)
        if not len(hashes):
            return out
        mixed = _fmix32(hashes)
        # Document boundaries inside the flat shingle array; chunks are cut on them.
        docs, first = np.unique(doc_of, return_index=True)
        bounds = np.append(first, len(mixed))
        d = 0
        while d < len(docs):
            e = int(np.searchsorted(bounds, bounds[d] + _CHUNK, side="right")) - 1
            e = min(max(e, d + 1), len(docs))
            lo, hi = bounds[d], bounds[e]
            permuted = self._a * mixed[None, lo:hi] + self._b  # wraps mod 2^32, exactly as datasketch
            out[docs[d:e]] = np.minimum.reduceat(permuted, bounds[d:e] - lo, axis=1).T
            d = e
        return out

def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity of two shingle sets."""
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)


def is_empty(signature: np.ndarray) -> bool:
    return bool(signature[0] == _EMPTY and np.all(signature == _EMPTY))


class NearDupIndex:
    """LSH over MinHash signatures, holding kept representatives; candidates are confirmed by estimated Jaccard.

    The (bands, rows) split is datasketch's `MinHashLSH` optimum for the threshold. The band keys are
    computed for a whole batch in numpy and looked up in plain dicts: datasketch's per-key insert and
    query cost ~100 us each in Python, which alone would exceed the 100k-pair time budget.
    """

    def __init__(self, hasher: MinHasher, threshold: float):
        self.hasher = hasher
        self.threshold = threshold
        params = MinHashLSH(threshold=threshold, num_perm=hasher.num_perm)
        self.bands, self.rows = params.b, params.r
        self._tables: list[dict[int, list[Hashable]]] = [{} for _ in range(self.bands)]
        self._sigs: dict[Hashable, np.ndarray] = {}
        self._band_keys: dict[Hashable, list[int]] = {}

    def __len__(self) -> int:
        return len(self._sigs)

    def band_keys(self, signatures: np.ndarray) -> list[list[int]]:
        """One 64-bit key per band per signature (the band's `rows` values folded together)."""
        sigs = np.atleast_2d(signatures)[:, : self.bands * self.rows].astype(np.uint64).reshape(len(signatures), self.bands, self.rows)
        acc = np.zeros((len(sigs), self.bands), dtype=np.uint64)
        for column in range(self.rows):
            acc = (acc ^ sigs[:, :, column]) * np.uint64(0x100000001B3)  # FNV-style fold; wraps mod 2^64
        return acc.tolist()

    def find(self, signature: np.ndarray, keys: list[int] | None = None) -> tuple[Hashable, float] | None:
        """The most similar indexed representative at or above the threshold, if any."""
        if not self._sigs or is_empty(signature):
            return None
        keys = keys if keys is not None else self.band_keys(signature[None, :])[0]
        candidates: set[Hashable] = set()
        for table, key in zip(self._tables, keys, strict=True):
            hit = table.get(key)
            if hit:
                candidates.update(hit)
        best: tuple[Hashable, float] | None = None
        for candidate in candidates:
            score = jaccard(signature, self._sigs[candidate])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (candidate, score)
        return best

    def add(self, key: Hashable, signature: np.ndarray, keys: list[int] | None = None) -> None:
        if key in self._sigs or is_empty(signature):
            return
        keys = keys if keys is not None else self.band_keys(signature[None, :])[0]
        for table, band_key in zip(self._tables, keys, strict=True):
            table.setdefault(band_key, []).append(key)
        self._sigs[key] = signature
        self._band_keys[key] = keys

    def remove(self, key: Hashable) -> None:
        if self._sigs.pop(key, None) is None:
            return
        for table, band_key in zip(self._tables, self._band_keys.pop(key), strict=True):
            members = table[band_key]
            members.remove(key)
            if not members:
                del table[band_key]
