"""Text normalisation, word hashing and n-grams shared by dedup, decontamination and stats.

Texts are tokenised once into one flat array of 64-bit word hashes (`TokenBatch`); shingles,
n-grams and exact keys are then computed with numpy over the whole batch, not per shingle in Python.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from llamaduo.records import Example

_WORD = re.compile(r"\w+", re.UNICODE)
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_U64 = np.uint64
# Odd 64-bit multipliers (golden-ratio and murmur constants) that mix word positions into one n-gram hash.
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xFF51AFD7ED558CCD], dtype=_U64)


def normalize(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form of a text (what exact dedup compares)."""
    return " ".join(words(text))


def words(text: str) -> list[str]:
    """Lower-cased word tokens with punctuation dropped: the unit of shingles and n-grams."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.lower())


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token count: words plus punctuation marks (close to BPE counts for English prose)."""
    return len(_TOKEN.findall(text))


def user_text(example: Example) -> str:
    """Every turn before the answer, joined: the 'instruction' side of a pair.

    Earlier tool calls and tool results count as content. The tool definitions do not: an application offers
    the same tools on every request, so they would make every pair look like every other."""
    return "\n".join(m.text for m in example.prompt)


def pair_text(example: Example) -> str:
    """Instruction plus response, the text near-dup detection compares."""
    return f"{user_text(example)}\n{example.reference or ''}"


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every run of `n` consecutive words (order-sensitive)."""
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=_U64)
    acc = np.zeros(count, dtype=_U64)
    for offset in range(n):
        acc = _mix_step(acc, word_hashes[offset : offset + count], offset)
    return acc ^ (acc >> _U64(29))


def _mix_step(acc: np.ndarray, window: np.ndarray, offset: int) -> np.ndarray:
    # A position-dependent rotation makes "a b" and "b a" hash differently.
    shift = _U64((offset * 7) % 63 + 1)
    return (acc ^ ((window << shift) | (window >> (_U64(64) - shift)))) * _MIX[offset % len(_MIX)]


class WordHasher:
    """Tokenises texts into 64-bit word hashes with numpy: one pass over all bytes of a batch, no per-word Python.

    A word is a run of ASCII letters, digits and underscores, or of non-ASCII characters (after lower-casing,
    NFKC and blanking non-ASCII punctuation); it is hashed by FNV-1a over its first 64 bytes plus its length,
    computed for all words at once, one byte position per numpy step.
    """

    def batch(self, docs: Sequence[Sequence[str]]) -> TokenBatch:
        """Tokenise documents made of segments (e.g. [instruction, response]) into one flat array."""
        widths = [len(segments) for segments in docs]
        hashes, per_segment = hash_words([seg for segments in docs for seg in segments])
        bounds = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        seg_cum = np.concatenate([[0], np.cumsum(per_segment)]).astype(np.int64)
        starts = seg_cum[bounds[:-1]]
        lengths = seg_cum[bounds[1:]] - starts
        padded = np.append(per_segment, 0)  # a document without segments reads the 0 past the end
        first = np.where(np.asarray(widths) > 0, padded[bounds[:-1]], 0)
        return TokenBatch(hashes, starts, lengths, first)

    def text(self, text: str) -> np.ndarray:
        return hash_words([text])[0]


_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"]] = True
_WORD_BYTE[0x80:] = True
_FNV_OFFSET, _FNV_PRIME = _U64(0xCBF29CE484222325), _U64(0x100000001B3)
_MAX_WORD_BYTES = 64
_NON_ASCII_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def _prepare(text: str) -> bytes:
    if text.isascii():
        return text.lower().encode("ascii")
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_ASCII_PUNCT.sub(" ", text).encode("utf-8")


def hash_words(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All word hashes of `texts` end to end, and the number of words in each text."""
    encoded = [_prepare(t) for t in texts]
    if not encoded:
        return np.empty(0, dtype=_U64), np.zeros(0, dtype=np.int64)
    data = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(e) + 1 for e in encoded])[:-1]]).astype(np.int64)
    word = _WORD_BYTE[data]
    edges = np.diff(np.concatenate([[False], word, [False]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    sizes = ends - starts
    acc = np.full(len(starts), _FNV_OFFSET, dtype=_U64)
    active = np.arange(len(starts))
    for k in range(_MAX_WORD_BYTES):
        # Only words longer than k take part in step k, so the total work is the number of bytes.
        acc[active] = (acc[active] ^ data[starts[active] + k]) * _FNV_PRIME
        active = active[sizes[active] > k + 1]
        if not len(active):
            break
    hashes = _fmix64(acc ^ sizes.astype(_U64))
    counts = np.bincount(np.searchsorted(offsets, starts, side="right") - 1, minlength=len(texts)).astype(np.int64)
    return hashes, counts


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: spreads the polynomial hash over all bits."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


@dataclass
class TokenBatch:
    """Word hashes of many documents laid end to end, with each document's start and length."""

    flat: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    first: np.ndarray
    """Words in each document's first segment (the instruction), so exact keys keep the boundary."""

    def __len__(self) -> int:
        return len(self.starts)

    def doc(self, i: int) -> np.ndarray:
        return self.flat[self.starts[i] : self.starts[i] + self.lengths[i]]

    def exact_keys(self) -> list[str]:
        """Equal keys mean equal normalised instruction and response."""
        return [
            xxhash.xxh3_128_hexdigest(self.doc(i).tobytes() + int(self.first[i]).to_bytes(8, "little"))
            for i in range(len(self))
        ]

    def windows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every n-word window inside a document, and the document index of each (sorted)."""
        grams = ngram_hashes(self.flat, n)
        if not len(grams):
            return grams, np.empty(0, dtype=np.int64)
        doc_of = np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)[: len(grams)]
        valid = np.arange(len(grams)) + n <= (self.starts + self.lengths)[doc_of]
        return grams[valid], doc_of[valid]

    def windows_by_size(self, sizes: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """`windows(n)` for several n in one pass: the hash recurrence of size n is a prefix of size n+1's."""
        if not sizes or not len(self.flat):
            return {n: self.windows(n) for n in sizes}
        top = max(sizes)
        padded = np.concatenate([self.flat, np.zeros(top, dtype=_U64)])
        count = len(self.flat)
        doc_of = np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)
        ends = (self.starts + self.lengths)[doc_of]
        positions = np.arange(count)
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        acc = np.zeros(count, dtype=_U64)
        for offset in range(top):
            acc = _mix_step(acc, padded[offset : offset + count], offset)
            size = offset + 1
            if size in sizes:
                valid = positions + size <= ends
                final = acc[valid]
                out[size] = (final ^ (final >> _U64(29)), doc_of[valid])
        return out

    def shingles(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n-word shingles per document; a document shorter than n words is one shingle of all its words."""
        grams, doc_of = self.windows(n)
        short = np.flatnonzero((self.lengths > 0) & (self.lengths < n))
        if len(short):
            extra = np.concatenate([ngram_hashes(self.doc(i), int(self.lengths[i])) for i in short])
            order = np.argsort(np.concatenate([doc_of, short]), kind="stable")
            grams, doc_of = np.concatenate([grams, extra])[order], np.concatenate([doc_of, short])[order]
        return grams, doc_of
