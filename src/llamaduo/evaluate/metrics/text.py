"""Reference-based text metrics: ROUGE-L, exact match, label accuracy and SQuAD-style token F1."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # Stemming follows the ROUGE-1.5.5 convention that most papers report.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), 0-1."""
    return float(_rouge_scorer().score(reference, candidate)["rougeL"].fmeasure)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(candidate: str, reference: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(candidate) == normalize_answer(reference))


def label_accuracy(candidate: str, reference: str) -> float:
    """1.0 when the answer states the reference label: equal after normalisation, or the label opens the answer.

    Small models often answer "Positive. The review praises..." for the label "positive"; the
    first-words rule credits that without crediting an answer that merely mentions the label later.
    """
    cand, ref = normalize_answer(candidate), normalize_answer(reference)
    if not ref:
        return float(not cand)
    return float(cand == ref or cand.split()[: len(ref.split())] == ref.split())


def token_f1(candidate: str, reference: str) -> float:
    """SQuAD token-overlap F1 between normalised answers, 0-1."""
    cand, ref = normalize_answer(candidate).split(), normalize_answer(reference).split()
    if not cand or not ref:
        return float(cand == ref)
    common = Counter(cand) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(cand), same / len(ref)
    return 2 * precision * recall / (precision + recall)
