"""`llamaduo synth -n N`: generate pairs from seed examples until N pass every gate, resumably.

Each accepted pair is appended (fsynced) to the run's `synth/accepted.jsonl` before its call is marked
done in `synth/calls.jsonl`; replies live in the service cache. A killed run restarted with the same
run folder skips done calls, re-reads the rest from the cache, and never adds a pair twice.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from llamaduo.atomic import append_line, atomic_write_bytes, atomic_write_json, read_jsonl
from llamaduo.data.splitting import shuffled
from llamaduo.data.store import DatasetStore
from llamaduo.data.text import user_text
from llamaduo.errors import BudgetExceeded, LlamaduoError
from llamaduo.records import Example, Message
from llamaduo.runs import RunFolder, new_run_id
from llamaduo.synth.gates import GATE_SCHEMA, GatePipeline, GateReport
from llamaduo.synth.tasks import TASK_KINDS
from llamaduo.synth.templating import PromptTemplate, load_template

STATE_DIR = "synth"


class SynthReport(BaseModel):
    run_id: str
    target: int
    accepted: int
    accepted_by_task: dict[str, int] = Field(default_factory=dict)
    calls: int = 0
    """Generator calls completed in this run (resumed ones included)."""
    pairs_generated: int = 0
    surplus: int = 0
    """Pairs that passed every gate after their task's quota was already full (not kept)."""
    cost_usd: float = 0.0
    cache_hits: int = 0
    stop_reason: str = ""
    """target_reached, max_calls or budget."""
    resumed: bool = False
    synthetic_version: str | None = None
    gate_report: GateReport = Field(default_factory=GateReport)


@dataclass
class _Call:
    id: str
    task: str
    number: int
    seeds: list[Example]
    prompt: str
    tools: list[dict[str, Any]] | None = None
    """The functions offered in this call's prompt: the seeds' tool definitions (tool-calling tasks only)."""


class _TaskPlan:
    """Seed sampling for one task: call j uses a fixed slice of a per-round seeded shuffle (no repeats in a round)."""

    def __init__(self, config: Any, task: str, pool: list[Example], target: int):
        self.task = task
        self.target = target
        self.pool = sorted(pool, key=lambda e: e.id)
        self.k = min(config.synth.seeds_per_call, len(self.pool))
        self.per_round = len(self.pool) // self.k
        self.seed = config.synth.seed
        # Seeds that offer tools make a tool-calling task, whatever its name, unless the config names its template.
        tooled = any(e.tools for e in self.pool) and task not in config.synth.task_templates and task not in config.synth.templates
        self.template: PromptTemplate = load_template(config, task, name="tool_calling" if tooled else None)
        self._rounds: dict[int, list[Example]] = {}

    def seeds(self, number: int) -> list[Example]:
        round_, slot = divmod(number, self.per_round)
        if round_ not in self._rounds:
            self._rounds = {round_: shuffled(self.pool, self.seed + round_, self.task)}
        return self._rounds[round_][slot * self.k : (slot + 1) * self.k]


def run_synth(config: Any, n: int, task: str | None = None, run: Any = None) -> SynthReport:
    """Generate until `n` pairs are accepted (split evenly across tasks) or the budget or max-calls limit stops it."""
    from llamaduo.service import run_sync

    return run_sync(synth_async(config, n, task=task, run=run))


async def synth_async(config: Any, n: int, *, task: str | None = None, run: Any = None) -> SynthReport:
    if n < 1:
        raise LlamaduoError(f"-n must be at least 1, got {n}", "Ask for one or more pairs.")
    store = DatasetStore(config.path(config.data.store))
    store.check_test_frozen()
    train, test, prior = store.examples("train"), store.examples("test"), store.examples("synthetic")
    tasks = [task] if task else (config.synth.tasks or sorted({e.task for e in train}))
    plans = _plans(config, train, tasks, n)
    folder, resumed = _open_run(config, run, n, tasks)
    state = folder.path(STATE_DIR)
    for log in ("accepted.jsonl", "calls.jsonl"):
        _drop_torn_tail(state / log)
    accepted = _dedupe(Example.model_validate(r["example"]) for r in read_jsonl(state / "accepted.jsonl"))
    done = {r["call"]: r for r in read_jsonl(state / "calls.jsonl")}
    report = SynthReport(run_id=folder.run_id, target=n, accepted=0, resumed=resumed)
    for row in done.values():
        report.gate_report.merge(GateReport.model_validate(row["gates"]))
        report.pairs_generated += row["pairs"]
        report.surplus += row.get("surplus", 0)
        report.cost_usd += row.get("cost_usd", 0.0)
    pipeline = GatePipeline(config, reference=[*train, *prior, *accepted.values()], test=test)
    max_calls = config.synth.max_calls or max(10, 4 * math.ceil(n / config.synth.pairs_per_call))
    folder.event("synth_started", target=n, tasks=tasks, resumed=report.resumed, accepted=len(accepted), calls_done=len(done))
    from llamaduo.service import ChatRequest, open_service

    async with open_service(config, "generator", run=folder) as generator:
        judge = open_service(config, "judge", run=folder) if config.synth.min_quality is not None else None
        try:
            report.stop_reason = await _generate(config, plans, pipeline, generator, judge, accepted, done, report, max_calls, state, ChatRequest)
        finally:
            if judge is not None:
                await judge.aclose()
    by_task = Counter(e.task for e in accepted.values())
    report.accepted = len(accepted)
    report.accepted_by_task = dict(sorted(by_task.items()))
    report.calls = len(done)
    report.synthetic_version = _publish(store, prior, list(accepted.values()), folder.run_id)
    folder.write_json(f"{STATE_DIR}/gate_report.json", report.gate_report.model_dump(mode="json"))
    folder.write_json(f"{STATE_DIR}/report.json", report.model_dump(mode="json"))
    atomic_write_json(state / "state.json", {"kind": "synth", "n": n, "tasks": tasks, "status": "completed", "stop_reason": report.stop_reason})
    folder.event("synth_finished", accepted=report.accepted, stop_reason=report.stop_reason, version=report.synthetic_version)
    return report


def _plans(config: Any, train: list[Example], tasks: list[str], n: int) -> list[_TaskPlan]:
    if not tasks:
        raise LlamaduoError("the train split is empty", "Run `llamaduo data ingest` and `llamaduo data split` first.")
    plans = []
    for i, task in enumerate(tasks):
        pool = [e for e in train if e.task == task and e.reference]
        if not pool:
            raise LlamaduoError(f"no train examples for task {task!r} to use as seeds", "Ingest and split data for it, or pick another --task.")
        plans.append(_TaskPlan(config, task, pool, n // len(tasks) + (1 if i < n % len(tasks) else 0)))
    return [p for p in plans if p.target > 0]


def _open_run(config: Any, run: Any, n: int, tasks: list[str]) -> tuple[RunFolder, bool]:
    """The run folder: the one given, the newest unfinished synth run with the same target, or a new one."""
    runs_dir = config.path(config.project.runs_dir)
    if isinstance(run, RunFolder):
        folder = run
    elif isinstance(run, str) and (runs_dir / run / "manifest.json").is_file():
        folder = RunFolder.open(runs_dir, run)
    elif isinstance(run, str):
        folder = RunFolder.create(runs_dir, config, run_id=run, seeds={"synth": config.synth.seed})
    else:
        folder = _unfinished_run(runs_dir, n, tasks) or RunFolder.create(
            runs_dir, config, run_id=new_run_id("synth"), seeds={"synth": config.synth.seed}
        )
    state_file = folder.path(STATE_DIR) / "state.json"
    resumed = (folder.path(STATE_DIR) / "calls.jsonl").exists() or (folder.path(STATE_DIR) / "accepted.jsonl").exists()
    atomic_write_json(state_file, {"kind": "synth", "n": n, "tasks": tasks, "status": "running"})
    return folder, resumed


def _unfinished_run(runs_dir: Any, n: int, tasks: list[str]) -> RunFolder | None:
    for candidate in sorted(runs_dir.glob(f"*/{STATE_DIR}/state.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        state = json.loads(candidate.read_text(encoding="utf-8"))
        if state.get("status") != "completed" and state.get("n") == n and state.get("tasks") == tasks:
            return RunFolder.open(runs_dir, candidate.parent.parent.name)
    return None


def _drop_torn_tail(path: Any) -> None:
    """Cut a half-written last line left by a kill, so the next append does not glue onto it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def _dedupe(examples: Any) -> dict[str, Example]:
    out: dict[str, Example] = {}
    for example in examples:
        out.setdefault(example.id, example)
    return out


async def _generate(
    config: Any, plans: list[_TaskPlan], pipeline: GatePipeline, generator: Any, judge: Any,
    accepted: dict[str, Example], done: dict[str, dict], report: SynthReport, max_calls: int, state: Any, request_cls: Any,
) -> str:
    m = config.synth.pairs_per_call
    next_number = {p.task: 0 for p in plans}
    while True:
        have = Counter(e.task for e in accepted.values())
        wanting = [p for p in plans if have[p.task] < p.target]
        if not wanting:
            return "target_reached"
        wave: list[_Call] = []
        budget_left = max_calls - len(done)
        for plan in wanting:
            want = min(math.ceil((plan.target - have[plan.task]) / m), config.synth.concurrency)
            while want > 0 and len(wave) < min(config.synth.concurrency, budget_left):
                number = next_number[plan.task]
                next_number[plan.task] += 1
                call_id = f"{plan.task}#{number}"
                if call_id in done:
                    continue
                seeds = plan.seeds(number)
                tools = offered_tools(seeds) if plan.template.kind == "tool_calling" else None
                prompt = plan.template.render(task=plan.task, m=m, tools=_tools_text(tools),
                                              seeds=[{"id": s.id, "prompt": user_text(s), "response": s.reference} for s in seeds])
                wave.append(_Call(call_id, plan.task, number, seeds, prompt, tools))
                want -= 1
        if not wave:
            return "max_calls"
        requests = [
            request_cls([{"role": "user", "content": c.prompt}], schema=TASK_KINDS[_kind(plans, c.task)].reply, sample=c.number)
            for c in wave
        ]
        try:
            results = await generator.chat_many(requests, stage="synth")
            await _process_wave(config, plans, pipeline, generator, judge, wave, results, accepted, done, report, state)
        except BudgetExceeded:
            # Replies already received are in the service cache; a re-run with more budget reuses them.
            return "budget"


def offered_tools(seeds: list[Example]) -> list[dict[str, Any]]:
    """The seeds' tool definitions, each function once (first definition wins), in the order they appear.

    An application that offers the same tools on every request gets exactly those; seeds with different tool sets
    (a benchmark) give a call with several functions to choose from, which makes the choice part of the data."""
    seen: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for tool in seed.tools or []:
            seen.setdefault(tool["function"]["name"], tool)
    return list(seen.values())


def _tools_text(tools: list[dict[str, Any]] | None) -> str:
    return "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools or [])


def _kind(plans: list[_TaskPlan], task: str) -> str:
    return next(p.template.kind for p in plans if p.task == task)


async def _process_wave(
    config: Any, plans: list[_TaskPlan], pipeline: GatePipeline, generator: Any, judge: Any, wave: list[_Call],
    results: list[Any], accepted: dict[str, Example], done: dict[str, dict], report: SynthReport, state: Any,
) -> None:
    from llamaduo.service import ServiceError

    deltas, survivors, generated = [], [], []
    for call, result in zip(wave, results, strict=True):
        delta = GateReport()
        deltas.append(delta)
        if isinstance(result, ServiceError):
            delta.invalid_replies[_invalid_reason(result)] = 1
            survivors.append([])
            generated.append(0)
            continue
        report.cost_usd += result.cost_usd
        report.cache_hits += int(result.cache_hit)
        pairs = list(result.parsed.pairs)
        generated.append(len(pairs))
        candidates = []
        for index, pair in enumerate(pairs):
            if index >= config.synth.pairs_per_call:
                delta.drop(GATE_SCHEMA, "extra_pair")
                continue
            example = _to_example(config, plans, call, pair, result, generator)
            if isinstance(example, str):
                delta.drop(GATE_SCHEMA, example)
            elif example.id not in accepted:  # already accepted before a crash: neither re-gated nor re-counted
                candidates.append(example)
        survivors.append(pipeline.screen(candidates, delta))
    if judge is not None:
        survivors = list(await asyncio.gather(*(pipeline.rate(s, judge, d) for s, d in zip(survivors, deltas, strict=True))))
    have = Counter(e.task for e in accepted.values())
    target = {p.task: p.target for p in plans}
    for call, passed, delta, count in zip(wave, survivors, deltas, generated, strict=True):
        surplus = 0
        for example in passed:
            if have[call.task] >= target[call.task]:
                surplus += 1
                pipeline.filter.forget(example.id)
                continue
            append_line(state / "accepted.jsonl", json.dumps({"call": call.id, "example": example.model_dump(mode="json")}, ensure_ascii=False))
            accepted[example.id] = example
            have[call.task] += 1
        row = {"call": call.id, "task": call.task, "pairs": count, "accepted": len(passed) - surplus, "surplus": surplus,
               "gates": delta.model_dump(mode="json")}
        append_line(state / "calls.jsonl", json.dumps(row))
        done[call.id] = row
        report.gate_report.merge(delta)
        report.pairs_generated += count
        report.surplus += surplus


def _invalid_reason(error: Any) -> str:
    from llamaduo.service import StructuredOutputError

    if isinstance(error, StructuredOutputError):
        return "not_json" if "not valid JSON" in str(error) else "schema_mismatch"
    return "service_error"


def _to_example(config: Any, plans: list[_TaskPlan], call: _Call, pair: BaseModel, result: Any, generator: Any) -> Example | str:
    """The pair as an Example, or the schema gate's reason for dropping it."""
    plan = next(p for p in plans if p.task == call.task)
    try:
        user, answer, extra = TASK_KINDS[plan.template.kind].to_turns(pair)
        if plan.template.kind == "tool_calling":
            reply = _tool_reply(answer, extra.pop("tool_calls"), call.tools or [])
            if isinstance(reply, str):
                return reply
        else:
            reply = Message(role="assistant", content=answer)
        messages = [Message(role="user", content=user), reply]
    except (ValidationError, AttributeError, TypeError):
        return "empty_field"
    provenance = {
        "generator": f"{generator.model.provider}/{generator.model.model}",
        "seed_ids": [s.id for s in call.seeds],
        "template": plan.template.version,
        "params": {k: v for k, v in generator.model.params.model_dump().items() if v is not None},
        "call": call.id,
        "cache_hit": bool(result.cache_hit),
    }
    return Example(
        id=Example.content_id(call.task, messages, call.tools), task=call.task, messages=messages, tools=call.tools or None, source="synth",
        metadata={"synthetic": True, "provenance": provenance, **extra},
    )


def _tool_reply(text: str, calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Message | str:
    """The assistant turn of a generated tool-calling pair; a call to a function that was not offered, or with
    arguments that are not JSON or break its schema, drops the pair (`invalid_tool_call`): never train on it."""
    from llamaduo.evaluate.metrics.tool_calls import CallCase, schema_valid

    if not calls:
        return Message(role="assistant", content=text) if text.strip() else "empty_field"
    turn = Message(role="assistant", content=text.strip() or None,
                   tool_calls=[{"id": f"call_{k}", "type": "function", "function": c} for k, c in enumerate(calls)])
    if not schema_valid(CallCase(turn.tool_calls or [], [], tools)):
        return "invalid_tool_call"
    return turn


def _publish(store: DatasetStore, prior: list[Example], accepted: list[Example], run_id: str) -> str | None:
    """The synthetic split = every earlier synthetic pair plus this run's; unchanged content writes no version."""
    known = {e.id for e in prior}
    fresh = [e for e in accepted if e.id not in known]
    previous = store.latest("synthetic")
    if not fresh:
        return previous
    parents = [v for v in (previous, store.latest("train"), store.latest("test")) if v]
    return store.write("synthetic", [*prior, *fresh], stage="synth", parents=parents, extra={"run_id": run_id, "added": len(fresh)})
