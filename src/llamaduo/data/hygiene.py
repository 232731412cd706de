"""Dedup and decontamination of a stream of pairs: exact, near-duplicate (one kept per cluster), then test overlap.

Used by `data split` on ingested train data and by the synth quality gates, so both obey the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llamaduo.data.config import DataConfig
from llamaduo.data.decontam import Decontaminator, segments
from llamaduo.data.dedup import MinHasher, NearDupIndex
from llamaduo.data.text import WordHasher
from llamaduo.records import Example

GATE_EXACT = "exact_dedup"
GATE_NEAR = "near_dedup"
GATE_DECONTAM = "decontamination"
# Pairs tokenised and hashed together: large enough for numpy to amortise, small enough to bound memory.
CHUNK = 8192


@dataclass
class Verdict:
    """Why a pair was dropped: the gate, the reason, and the kept pair or test item it collided with."""

    gate: str
    reason: str
    other: str
    score: float = 1.0


class PairFilter:
    """Stateful gates 2-4. Pairs that pass are registered, so later near-copies of them are dropped."""

    def __init__(self, config: DataConfig, test: Sequence[Example] = ()):
        self.words = WordHasher()
        self.hasher = MinHasher()
        self.exact: dict[str, str] = {}
        self.near = NearDupIndex(self.hasher, config.near_dup_threshold)
        self._keys: dict[str, str] = {}
        self.decontam = (
            Decontaminator(
                test,
                word_hasher=self.words,
                hasher=self.hasher,
                near_dup_threshold=config.near_dup_threshold,
                ngram=config.decontam_ngram,
                embed_threshold=config.decontam_embed_threshold,
            )
            if test
            else None
        )

    def register(self, examples: Sequence[Example]) -> None:
        """Add already-kept pairs (train data, accepted synthetic pairs) without judging them."""
        for start in range(0, len(examples), CHUNK):
            chunk = examples[start : start + CHUNK]
            batch = self.words.batch([segments(e) for e in chunk])
            sigs = self.hasher.signatures(batch)
            for example, key, sig, bands in zip(chunk, batch.exact_keys(), sigs, self.near.band_keys(sigs), strict=True):
                self._keep(example.id, key, sig, bands)

    def screen(self, examples: Sequence[Example]) -> list[Verdict | None]:
        """Judge pairs in order; None means it passed and is now registered as kept."""
        verdicts: list[Verdict | None] = []
        for start in range(0, len(examples), CHUNK):
            verdicts.extend(self._screen_chunk(examples[start : start + CHUNK]))
        return verdicts

    def _screen_chunk(self, examples: Sequence[Example]) -> list[Verdict | None]:
        batch = self.words.batch([segments(e) for e in examples])
        keys = batch.exact_keys()
        sigs = self.hasher.signatures(batch)
        leaks = self.decontam.check(examples, batch, keys, sigs) if self.decontam else [None] * len(examples)
        verdicts: list[Verdict | None] = []
        for example, key, sig, bands, leak in zip(examples, keys, sigs, self.near.band_keys(sigs), leaks, strict=True):
            verdict = None
            if key in self.exact:
                verdict = Verdict(GATE_EXACT, "duplicate", self.exact[key])
            elif (hit := self.near.find(sig, bands)) is not None:
                verdict = Verdict(GATE_NEAR, "near_duplicate", str(hit[0]), hit[1])
            elif leak is not None:
                verdict = Verdict(GATE_DECONTAM, leak.reason, leak.test_id, leak.score)
            else:
                self._keep(example.id, key, sig, bands)
            verdicts.append(verdict)
        return verdicts

    def forget(self, example_id: str) -> None:
        """Undo the registration of a pair a later gate rejected, so it does not block others."""
        key = self._keys.pop(example_id, None)
        if key is not None and self.exact.get(key) == example_id:
            del self.exact[key]
        self.near.remove(example_id)

    def _keep(self, example_id: str, key: str, sig, bands: list[int]) -> None:
        self.exact.setdefault(key, example_id)
        self._keys[example_id] = key
        self.near.add(example_id, sig, bands)
