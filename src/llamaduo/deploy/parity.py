"""The parity check run after every export: the exported artifact and the checkpoint answer the same prompts greedily.

It compares the rendered prompt tokens, the stop tokens and stop behaviour, and judge-free answer similarity, and
names the cause when the export falls short: template differs, stop token missing, or quantization drop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.infer.engines.base import Engine, GenParams


class PromptParity(BaseModel):
    prompt: str
    checkpoint_answer: str
    export_answer: str
    prompt_tokens_equal: bool
    checkpoint_finish: str
    export_finish: str
    token_f1: float
    rouge_l: float


class ParityReport(BaseModel):
    format: str
    quantization: str | None = None
    prompts: int = 0
    prompt_tokens_equal: int = 0
    """Prompts whose rendered token ids are identical in the export and the checkpoint."""
    stop_tokens_missing: list[str] = Field(default_factory=list)
    stop_agreement: float = 0.0
    """Share of prompts where both stopped (or both hit max tokens) alike."""
    mean_token_f1: float = 0.0
    mean_rouge_l: float = 0.0
    exact_match: float = 0.0
    tolerance: float = 0.0
    passed: bool = False
    cause: str | None = None
    code_path: str = ""
    """Which code answered on each side: the engine layer the loop's inference and `serve` use, and its settings."""
    details: list[PromptParity] = Field(default_factory=list)


def greedy(engine: Engine, prompt_ids: list[int], max_tokens: int) -> tuple[str, str]:
    pieces, produced = [], 0
    for step in engine.generate(GenParams(list(prompt_ids), max_tokens, temperature=0.0)):
        pieces.append(step.text)
        produced += 1
    # Nothing is decoded here: each step's text is what the engine's incremental decoder released, which holds an
    # incomplete multi-byte character back until a later step completes it, so the joined pieces are the whole answer.
    return "".join(pieces), ("length" if produced >= max_tokens else "stop")


def check_parity(
    checkpoint: Engine,
    exported: Engine,
    prompts: list[list[dict[str, Any]]],
    *,
    fmt: str,
    quantization: str | None,
    tolerance: float,
    max_tokens: int,
    missing_stops: list[str],
    render_export: Callable[[list[dict[str, Any]]], str] | None = None,
) -> ParityReport:
    """Answer each prompt with both engines; `render_export` overrides how the export renders (the Ollama template)."""
    from llamaduo.evaluate.metrics.text import exact_match, rouge_l, token_f1

    render_export = render_export or exported.render_chat
    details: list[PromptParity] = []
    template_differs = False
    for messages in prompts:
        ck_text = checkpoint.render_chat(messages)
        ex_text = render_export(messages)
        ck_ids, ex_ids = checkpoint.tokenize(ck_text), exported.tokenize(ex_text)
        template_differs |= ck_text != ex_text
        ck_answer, ck_finish = greedy(checkpoint, ck_ids, max_tokens)
        ex_answer, ex_finish = greedy(exported, ex_ids, max_tokens)
        details.append(PromptParity(
            prompt=messages[-1]["content"][:200], checkpoint_answer=ck_answer, export_answer=ex_answer,
            prompt_tokens_equal=ck_ids == ex_ids, checkpoint_finish=ck_finish, export_finish=ex_finish,
            token_f1=_similar(token_f1, ex_answer, ck_answer), rouge_l=_similar(rouge_l, ex_answer, ck_answer),
        ))
    n = max(1, len(details))
    report = ParityReport(
        format=fmt, quantization=quantization, prompts=len(details),
        prompt_tokens_equal=sum(d.prompt_tokens_equal for d in details),
        stop_tokens_missing=missing_stops,
        stop_agreement=sum(d.checkpoint_finish == d.export_finish for d in details) / n,
        mean_token_f1=sum(d.token_f1 for d in details) / n,
        mean_rouge_l=sum(d.rouge_l for d in details) / n,
        exact_match=sum(exact_match(d.export_answer, d.checkpoint_answer) for d in details) / n,
        tolerance=tolerance, details=details, code_path=describe_code_path(checkpoint, exported),
    )
    report.cause = _cause(report, template_differs)
    if report.cause and report.cause.startswith("quantization drop") and "bfloat16" in str(checkpoint.describe().get("dtype")):
        report.cause += ("; the checkpoint ran in bfloat16 (infer.precision auto on this machine), the precision the judged "
                         "answers used: set infer.precision=fp32 to compare against the full-precision weights")
    report.passed = report.cause is None
    return report


def describe_code_path(checkpoint: Engine, exported: Engine) -> str:
    """One line naming the engines: the checkpoint side is the engine, dtype and greedy policy the loop's answers came from."""
    def side(engine: Engine) -> str:
        info = engine.describe()
        extra = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("dtype", "native_path"))
        return f"{type(engine).__module__}.{type(engine).__name__}" + (f" ({extra})" if extra else "")

    return f"checkpoint: {side(checkpoint)}; export: {side(exported)}; greedy decoding from llamaduo.infer.engines.policy, as in infer and serve"


def _similar(metric, candidate: str, reference: str) -> float:
    # Two empty answers agree perfectly; the text metrics would call that 0.
    if not candidate.strip() and not reference.strip():
        return 1.0
    return float(metric(candidate, reference))


def _cause(report: ParityReport, template_differs: bool) -> str | None:
    if report.prompt_tokens_equal < report.prompts:
        bad = report.prompts - report.prompt_tokens_equal
        what = "template differs" if template_differs else "tokenizer differs"
        return f"{what}: {bad} of {report.prompts} prompts render to different tokens than the checkpoint's"
    if report.stop_tokens_missing:
        return f"stop token missing: {', '.join(report.stop_tokens_missing)} does not end generation in the export"
    if report.mean_token_f1 < report.tolerance:
        label = report.quantization or report.format
        return f"quantization drop: mean token F1 to the checkpoint's answers is {report.mean_token_f1:.3f}, below the {label} tolerance {report.tolerance}"
    return None
