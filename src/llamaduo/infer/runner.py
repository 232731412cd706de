"""`infer(config, model)`: answer the test prompts K times each and write `Answer` rows (JSONL, atomically).

Finished chunks are appended to `answers.partial.jsonl`, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llamaduo.atomic import append_line, atomic_write_text, read_jsonl
from llamaduo.errors import LlamaduoError
from llamaduo.records import Answer, Example
from llamaduo.runs import RunFolder, new_run_id

ANSWERS = "answers.jsonl"


class InferResult(BaseModel):
    """Where the answers are and how fast the backend produced them."""

    run_id: str | None = None
    answers_path: str
    answers: int
    backend: str
    model: str
    """Fingerprint of the answering model."""
    params: dict[str, Any]
    tokens_per_s: float
    """Generated tokens per second of generation wall time (this call's prompts only)."""
    peak_memory_mb: float
    wall_s: float
    resumed: int = 0
    """Answers found already done by an interrupted earlier call."""


def infer(
    config: Any,
    model_dir_or_id: str | None = None,
    examples: Sequence[Example] | None = None,
    backend: str | None = None,
    run: RunFolder | None = None,
    output: str | os.PathLike[str] | None = None,
) -> InferResult:
    """Answer every prompt of `examples` (default: the frozen test split) `config.infer.samples` times."""
    from llamaduo.infer.engines import open_engine
    from llamaduo.infer.engines.policy import describe_params, infer_params
    from llamaduo.train.device import peak_memory_mb

    ic = config.infer
    name = backend or ic.backend
    model = resolve_local_model(config, name, model_dir_or_id or ic.model)
    if examples is None:
        examples = _test_split(config)
    if not examples:
        raise LlamaduoError("there are no test prompts to answer", "Run `llamaduo data split` first, or pass examples.")
    if run is None and output is None:
        run = RunFolder.create(config.path(config.project.runs_dir), config, run_id=new_run_id(f"{config.project.name}-infer"))
    path = Path(output) if output else run.path(ANSWERS)  # type: ignore[union-attr]
    partial = path.with_name(path.stem + ".partial.jsonl")
    done = {(r["example_id"], r["sample"]): r for r in read_jsonl(partial)}
    todo = [ex for ex in examples if any((ex.id, k) not in done for k in range(ic.samples))]
    resumed = sum((ex.id, k) in done for ex in examples for k in range(ic.samples))
    started = time.perf_counter()
    generated = 0
    gen_time = 0.0
    engine = open_engine(engine_spec(config, name, str(model)), config)
    params = {"backend": name, **describe_params(ic), "samples": ic.samples}
    if run is not None:
        run.event("infer_started", backend=name, model=str(model), prompts=len(examples), todo=len(todo), **engine.describe())
    try:
        chunk = max(ic.batch_size * 4, 16)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            prompts = [[m.model_dump() for m in ex.prompt] for ex in part]
            t0 = time.perf_counter()
            outputs = _answer_chats(engine, prompts, [ex.tools for ex in part], infer_params(ic), ic.samples)
            gen_time += time.perf_counter() - t0
            for ex, msgs, gens in zip(part, prompts, outputs, strict=True):
                rendered = engine.render_chat(msgs, ex.tools)
                for k, gen in enumerate(gens):
                    generated += gen.completion_tokens
                    text, calls = gen.text.strip(), gen.tool_calls
                    answer = Answer(
                        example_id=ex.id, task=ex.task, sample=k, messages=ex.prompt, rendered_prompt=rendered,
                        reference=ex.reference, text=text, tool_calls=calls, finish_reason=gen.finish_reason, model=engine.fingerprint,
                        params=params, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                        metadata={"model_path": str(getattr(engine, "path", model))},
                    )
                    append_line(partial, answer.model_dump_json())
                    done[(ex.id, k)] = json.loads(answer.model_dump_json())
    finally:
        engine.close()
    rows = [done[(ex.id, k)] for ex in examples for k in range(ic.samples)]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    partial.unlink(missing_ok=True)
    result = InferResult(
        run_id=run.run_id if run else None, answers_path=str(path), answers=len(rows), backend=name, model=engine.fingerprint,
        params=params, tokens_per_s=round(generated / gen_time, 2) if gen_time else 0.0,
        peak_memory_mb=round(peak_memory_mb(), 1), wall_s=round(time.perf_counter() - started, 2),
        resumed=resumed,
    )
    if run is not None:
        run.event("infer_finished", **result.model_dump(exclude={"params"}))
    return result


def _answer_chats(engine: Any, chats: list[list[dict[str, Any]]], tools: list[Any], params: Any, samples: int) -> list[Any]:
    """Plain chats are batched; a chat that offers tools is answered by serve's tool turn (deploy/tool_turn.py, as
    with tool_choice auto), so its calls are generated, constrained and parsed exactly as the deployed model's are.
    Each answer is a Generation, carrying its OpenAI tool calls as `tool_calls` where it made any."""
    if not any(tools):
        if any(m.get("role") == "tool" or m.get("tool_calls") for c in chats for m in c) and engine.name != "openai":
            return engine.generate_batch([engine.tokenize(engine.render_chat(c)) for c in chats], params, samples)
        return engine.answer_chats(chats, params, samples)
    if engine.name == "openai":
        raise LlamaduoError("the openai backend does not send tools yet, so it cannot answer tool-calling prompts",
                            "Use infer.backend=transformers or llamacpp for tool-calling tasks.")
    import asyncio

    return asyncio.run(_tool_turns(engine, chats, tools, params, samples))


async def _tool_turns(engine: Any, chats: list[list[dict[str, Any]]], tools: list[Any], params: Any, samples: int) -> list[Any]:
    from llamaduo.deploy.tool_turn import ToolPlan, ToolTurn, collect_turn
    from llamaduo.infer.engines import GenParams, Generation

    cache: dict[str, Any] = {}  # the model's call format, read once
    results = []
    for chat, offered in zip(chats, tools, strict=True):
        ids = engine.tokenize(engine.render_chat(chat, offered))
        if not offered:
            results.append(engine.generate_batch([ids], params, samples)[0])
            continue
        plan = await ToolPlan.build(engine, offered, "auto", None, True, cache)
        row = []
        for k in range(samples):
            seed = None if params.seed is None else params.seed + k
            gp = GenParams(list(ids), params.max_tokens, params.temperature, params.top_p, seed)
            message, finish, used = await collect_turn(ToolTurn(engine, plan, ids, gp, [], time.monotonic() + 3600))
            row.append(Generation(text=message["content"] or "", finish_reason=finish, prompt_tokens=len(ids),
                                  completion_tokens=used, tool_calls=message.get("tool_calls")))
        results.append(row)
    return results


def engine_spec(config: Any, kind: str, model: str) -> Any:
    """The EngineSpec of the loop's inference; `serve` builds its own from the same fields, so both run alike."""
    from llamaduo.infer.engines import EngineSpec

    ic = config.infer
    return EngineSpec(
        kind=kind, model=model, context_length=ic.n_ctx if kind == "llamacpp" else None, threads=ic.threads,
        precision=ic.precision, batch_size=ic.batch_size, seed=ic.seed,
        options={"endpoints": ic.endpoints, "api_key_env": ic.api_key_env, "concurrency": ic.concurrency},
    )


def read_answers(path: str | os.PathLike[str]) -> list[Answer]:
    return [Answer.model_validate(r) for r in read_jsonl(path)]


def resolve_local_model(config: Any, backend: str, ref: str | None) -> str:
    """What the engine loads: any name the resolver knows (a run id, RUN:iter-K, a path, a hub id; none is the project's
    newest model), as a model folder for transformers or a GGUF for llama.cpp. The openai engine takes a served name."""
    from llamaduo.artifacts import resolve_artifact

    if backend == "openai":
        if not ref:
            raise LlamaduoError("the openai backend needs the served model's name", "Pass --model NAME (as the server lists it in /v1/models).")
        return ref
    prefer = "gguf" if backend == "llamacpp" else "merged"
    found = resolve_artifact(ref, config, prefer=prefer)
    return str(found.require(*(("gguf",) if backend == "llamacpp" else ("merged", "base")), purpose=f"the {backend} backend").path)


def latest_merged_model(config: Any) -> str:
    """The project's newest finished model: a train run's merged model or a loop run's best iteration."""
    return resolve_local_model(config, "transformers", None)


def _test_split(config: Any) -> list[Example]:
    from llamaduo.data.store import DatasetStore

    store = DatasetStore(config.path(config.data.store))
    store.check_test_frozen()
    return store.examples("test")
