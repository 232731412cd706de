"""Local inference over the test split: `infer(config, model)` writes one `Answer` per prompt and sample."""

from llamaduo.infer.runner import InferResult, infer, read_answers

__all__ = ["InferResult", "infer", "read_answers"]
