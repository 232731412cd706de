"""Every judge-free metric on examples computed by hand, and the registry's error for unknown names."""

from __future__ import annotations

import math

import pytest

from llamaduo.errors import LlamaduoError
from llamaduo.evaluate.metrics import METRICS, get_metric
from llamaduo.evaluate.metrics.passk import extract_code, has_tests, pass_at_k, program_with_tests
from llamaduo.evaluate.metrics.text import exact_match, label_accuracy, normalize_answer, rouge_l, token_f1


def test_rouge_l_hand_computed():
    # LCS of "the cat sat on the mat" / "the cat is on the mat" is "the cat on the mat" (5 tokens):
    # precision 5/6, recall 5/6 -> F1 5/6.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("completely different words", "the cat is on the mat") == 0.0
    # Stemming: "cats" and "cat" match.
    assert rouge_l("cats", "cat") == 1.0


def test_normalisation_and_exact_match():
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert exact_match("The Paris.", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_label_accuracy_credits_a_leading_label_only():
    assert label_accuracy("Positive", "positive") == 1.0
    assert label_accuracy("Positive. The review praises the food.", "positive") == 1.0
    assert label_accuracy("It is not positive", "positive") == 0.0


def test_token_f1_hand_computed():
    # cand tokens [cat, sat], ref [cat, sat, down] after dropping "the"/"a": P=1, R=2/3 -> F1 0.8
    assert token_f1("The cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "cat") == 0.0


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_code_extraction_and_programs():
    answer = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(answer) == "def add(a, b):\n    return a + b"
    assert extract_code("def f(): pass") == "def f(): pass"
    mbpp = {"test_list": ["assert add(1, 2) == 3"], "test_setup_code": "import math"}
    assert has_tests(mbpp) and program_with_tests("CODE", mbpp).index("CODE") < program_with_tests("CODE", mbpp).index("assert")
    human = {"prompt": "def add(a, b):\n", "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"}
    assert program_with_tests("    return a + b\n", human).endswith("check(add)\n")
    assert not has_tests({"test": "x"})


def test_registry_lists_every_metric_and_rejects_typos():
    assert set(METRICS) == {"rouge_l", "embedding", "exact_match", "label_accuracy", "token_f1", "pass_at_k",
                            "tool_decision", "tool_name", "tool_args_exact", "tool_schema_valid"}
    assert get_metric("token_f1").applies("closed_qa") and not get_metric("token_f1").applies("summarization")
    with pytest.raises(LlamaduoError, match="Did you mean `rouge_l`"):
        get_metric("rougel")


def test_embedding_cosine_offline():
    from llamaduo.evaluate.metrics.embedding import cosine_many, model_path

    assert (model_path() / "model.safetensors").is_file()
    same, para, other = cosine_many(
        ["The cat sleeps on the sofa.", "A cat is sleeping on the couch.", "Quarterly revenue rose 4%."],
        ["The cat sleeps on the sofa.", "The cat sleeps on the sofa.", "The cat sleeps on the sofa."],
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert para > 0.6 > other
