"""Run every configured judge over the answers (concurrently per judge, judges one after another).

With a run folder, each answer's judgments are appended to a journal as soon as they exist, so a run killed
midway resumes without asking again, even for judgments that failed (the cache holds only good replies).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llamaduo.atomic import append_line, read_jsonl
from llamaduo.evaluate.judge import Judgment, JudgeRunner
from llamaduo.evaluate.offline import Item
from llamaduo.evaluate.rubric import Rubric


def judge_all(config: Any, items: list[Item], rubric: Rubric | None, run: Any = None, iteration: int = 0, *,
              resume: bool = True, stage: str = "evaluate") -> tuple[list[Judgment], float]:
    """All judgments of all judges, and what they cost (0 for replies served from the cache or the journal).

    `stage` names the ledger stage the requests are booked to (the gateway's live judging uses `live_eval`)."""
    from llamaduo.service import run_sync

    if rubric is None:
        return [], 0.0
    journal = run.path(f"eval/iter-{iteration}/journal.jsonl") if run is not None and resume else None
    return run_sync(_judge_all(config, items, rubric, run, journal, stage))


def _key(j: Judgment | dict[str, Any]) -> tuple[str, int, int, str]:
    get = j.get if isinstance(j, dict) else lambda k: getattr(j, k)
    return (get("example_id"), get("sample"), get("judge"), get("order"))


def _load(journal: Path | None, stamp: dict[str, Any]) -> list[Judgment]:
    if journal is None:
        return []
    # Only judgments made under the same rubric, mode and M count; a changed setting asks again.
    rows = [r for r in read_jsonl(journal) if all(r.get(k) == v for k, v in stamp.items())]
    return [Judgment.model_validate(r["judgment"]) for r in rows]


async def _judge_all(config: Any, items: list[Item], rubric: Rubric, run: Any, journal: Path | None,
                     stage: str = "evaluate") -> tuple[list[Judgment], float]:
    judgments: list[Judgment] = []
    cost = 0.0
    for group_rubric, group in _by_rubric(config, items, rubric):
        got, spent = await _judge_group(config, group, group_rubric, run, journal, stage)
        judgments += got
        cost += spent
    return judgments, cost


def _by_rubric(config: Any, items: list[Item], rubric: Rubric) -> list[tuple[Rubric, list[Item]]]:
    """Prompts that offered tools get the tool-call rubric (pointwise, unless evaluate.rubric names the user's own)."""
    tooled = [it for it in items if it.tools is not None]
    ec = config.evaluate
    if not tooled or ec.rubric or ec.mode != "pointwise":
        return [(rubric, items)]
    from llamaduo.evaluate.rubric import load_rubric

    plain = [it for it in items if it.tools is None]
    groups = [(rubric, plain)] if plain else []
    return groups + [(load_rubric("tools", version=ec.rubric_version), tooled)]


def _extras(item: Item, max_chars: int) -> dict[str, str]:
    """The tool rubric's variables: the offered tools, the whole conversation (tool results included), the checks."""
    from llamaduo.evaluate.rubric import fence

    case = item.call_case
    if case is None:
        return {}
    from llamaduo.evaluate.metrics.tool_calls import checks_text

    conversation = "\n\n".join(f"[{m.role}] {m.text}" for m in item.answer.messages)
    # One line per function, as the fallback chat format lists them: compact, since small judges have short contexts.
    tools = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in item.tools or [])
    return {"tools": fence(tools, max_chars), "conversation": fence(conversation, max_chars), "checks": checks_text(case)}


async def _judge_group(config: Any, items: list[Item], rubric: Rubric, run: Any, journal: Path | None,
                       stage: str = "evaluate") -> tuple[list[Judgment], float]:
    from llamaduo.service import open_service

    ec = config.evaluate
    stamp = {"rubric": rubric.id, "mode": ec.mode, "repeats": ec.repeats}
    ids = {it.answer.example_id for it in items}
    done = [j for j in _load(journal, stamp) if j.example_id in ids]
    done_keys = {_key(j) for j in done}
    judgments: list[Judgment] = list(done)
    cost = 0.0

    def record(group: list[Judgment]) -> None:
        if journal is not None:
            for j in group:
                append_line(journal, json.dumps({**stamp, "judgment": j.model_dump(mode="json")}))

    orders = ("AB", "BA") if ec.mode == "pairwise" else ("",)
    for index in range(len(config.service.judge)):
        todo = [it for it in items if any((it.answer.example_id, it.answer.sample, index, o) not in done_keys for o in orders)]
        if not todo:
            continue
        answers = [it.answer.model_copy(update={"reference": it.reference}) for it in todo]
        instructions = [it.instruction for it in todo]
        async with open_service(config, "judge", index=index, run=run) as client:
            runner = JudgeRunner(client, index, rubric, repeats=ec.repeats, retries=ec.parse_retries,
                                 max_chars=ec.max_candidate_chars, on_done=record, stage=stage)
            if ec.mode == "pairwise":
                new = await runner.pairwise(answers, instructions)
            else:
                new = await runner.pointwise(answers, instructions, [_extras(it, ec.max_candidate_chars) for it in todo])
            judgments += [j for j in new if _key(j) not in done_keys]
            cost += client.stats["cost_usd"]
    return judgments, cost
