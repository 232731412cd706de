"""Exact dedup, near-duplicate clustering (one kept per cluster) and decontamination against test items."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash

from llamaduo.data.config import DataConfig
from llamaduo.data.dedup import MinHasher
from llamaduo.data.hygiene import PairFilter
from llamaduo.data.text import WordHasher
from llamaduo.records import Example, Message
from tests.data.factory import sentence


def pair(user: str, answer: str, task: str = "t") -> Example:
    messages = [Message(role="user", content=user), Message(role="assistant", content=answer)]
    return Example(id=Example.content_id(task, messages), task=task, messages=messages)


def test_batch_signatures_equal_datasketch_minhash():
    rng = random.Random(0)
    docs = [[sentence(rng, rng.randint(0, 40)), sentence(rng, 5)] for _ in range(30)] + [["", ""], ["one", "two"]]
    hasher = MinHasher()
    batch = WordHasher().batch(docs)
    sigs = hasher.signatures(batch)
    hashes, doc_of = hasher.shingle_hashes(batch)
    for i in range(len(docs)):
        reference = MinHash(num_perm=hasher.num_perm, seed=hasher.seed, hashfunc=int)
        reference.update_batch(hashes[doc_of == i].tolist())
        assert np.array_equal(reference.hashvalues, sigs[i])


def test_exact_duplicates_ignore_case_punctuation_and_spacing():
    rng = random.Random(1)
    user, answer = sentence(rng), sentence(rng)
    verdicts = PairFilter(DataConfig()).screen([pair(user, answer), pair(user.upper() + "  !", answer.replace(" ", "   "))])
    assert verdicts[0] is None and verdicts[1].reason == "duplicate" and verdicts[1].other == pair(user, answer).id


def test_near_duplicates_keep_one_representative_per_cluster():
    rng = random.Random(2)
    bases = [(sentence(rng, 40), sentence(rng, 60)) for _ in range(3)]
    items, cluster_of = [], []
    for c, (user, answer) in enumerate(bases):
        items.append(pair(user, answer))
        cluster_of.append(c)
        for variant in range(3):
            words = answer.split()
            words[5] = f"changed{variant}"  # every pair in a cluster differs by one word
            items.append(pair(user, " ".join(words)))
            cluster_of.append(c)
    order = list(range(len(items)))
    random.Random(3).shuffle(order)
    verdicts = PairFilter(DataConfig()).screen([items[i] for i in order])
    kept = [order[k] for k, v in enumerate(verdicts) if v is None]
    assert sorted(cluster_of[i] for i in kept) == [0, 1, 2]  # exactly one survivor per cluster, never zero
    kept_ids = {items[i].id for i in kept}
    assert all(v.reason == "near_duplicate" and v.other in kept_ids for v in verdicts if v is not None)


def test_forget_lets_a_later_copy_in():
    rng = random.Random(4)
    first = pair(sentence(rng, 20), sentence(rng, 20))
    gate = PairFilter(DataConfig())
    assert gate.screen([first]) == [None]
    gate.forget(first.id)
    assert gate.screen([first]) == [None]


def test_decontamination_by_13_gram_short_segments_and_near_copies():
    rng = random.Random(5)
    long_answer = sentence(rng, 40)
    short_question = "which of these animals can fly heron or walnut today"  # 10 words: a short test segment
    test = [pair("summarise: " + sentence(rng, 30), long_answer), pair(short_question, "heron"), pair(sentence(rng, 12), "yes")]
    words = long_answer.split()
    leak13 = pair("new question " + sentence(rng, 10), "so " + " ".join(words[10:23]) + " " + sentence(rng, 10))
    near12 = pair("new question " + sentence(rng, 10), "so " + " ".join(words[10:22]) + " " + sentence(rng, 10))
    short_leak = pair("A quiz for the class about " + sentence(rng, 12) + " " + short_question + "?", sentence(rng, 10))
    common = pair("is it " + sentence(rng, 8), "yes")
    copy = pair(test[0].instruction, test[0].reference)
    verdicts = PairFilter(DataConfig(), test).screen([leak13, near12, short_leak, common, copy])
    assert [v.reason if v else None for v in verdicts] == ["test_ngram", None, "test_ngram", None, "test_exact"]
    assert verdicts[0].other == test[0].id and verdicts[2].other == test[1].id


@pytest.mark.slow  # loads torch and the bundled all-MiniLM-L6-v2 (about 15 s on 2 cores)
def test_embedding_decontamination_catches_paraphrases():
    test = [pair("What is the capital city of France?", "The capital of France is Paris.")]
    paraphrase = pair("Which city serves as France's capital?", "Paris is the French capital.")
    unrelated = pair("Write a haiku about autumn leaves.", "Red leaves drift and fall")
    config = DataConfig(decontam_embed_threshold=0.75)
    verdicts = PairFilter(config, test).screen([paraphrase, unrelated])
    assert verdicts[0] is not None and verdicts[0].reason == "test_embedding" and verdicts[0].score >= 0.75
    assert verdicts[1] is None
    assert PairFilter(DataConfig(), test).screen([paraphrase]) == [None]  # off by default


def test_windows_of_several_sizes_in_one_pass_match_single_size_windows():
    rng = random.Random(6)
    batch = WordHasher().batch([[sentence(rng, rng.randint(0, 20)), sentence(rng, 3)] for _ in range(20)])
    together = batch.windows_by_size({3, 8, 13})
    for size in (3, 8, 13):
        alone = batch.windows(size)
        assert np.array_equal(together[size][0], alone[0]) and np.array_equal(together[size][1], alone[1])
