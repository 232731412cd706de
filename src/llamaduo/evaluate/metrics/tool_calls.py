"""Judge-free scoring of tool calls: the decision to call, the function names, the arguments, the schemas.

A `CallCase` is one answer to a prompt that offered tools. Arguments are compared value by value: `exact` (the
same JSON text), `structural` (equal once parsed: key order, spacing and 1 vs 1.0 do not matter), `free_text`
(two different strings, which only a judge can compare by meaning) or `mismatch` (missing, extra, another value).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llamaduo.records import ToolCall, tool_call_text

_MISSING = object()
_RANK = {"exact": 2, "structural": 2, "free_text": 1, "mismatch": 0}


@dataclass
class CallCase:
    calls: list[ToolCall]
    """What the answer called (empty: it answered in text)."""
    reference: list[ToolCall]
    """What the satisfactory answer called (empty: the right decision was not to call)."""
    tools: list[dict[str, Any]]


def decision(case: CallCase) -> float:
    """1 when the answer calls a tool exactly when the reference does."""
    return float(bool(case.calls) == bool(case.reference))


def name_accuracy(case: CallCase) -> float | None:
    """1 when the answer calls the reference's functions (as a multiset: parallel calls in any order)."""
    if not case.reference:
        return None  # nothing should be called: `tool_decision` scores that
    return float(Counter(c.function.name for c in case.calls) == Counter(c.function.name for c in case.reference))


def args_exact(case: CallCase) -> float | None:
    """1 when every call has the reference's function and equal arguments (as JSON; free text must match too)."""
    if not case.reference:
        return None
    pairs = pair_calls(case.calls, case.reference)
    if pairs is None:
        return 0.0
    return float(all(level in ("exact", "structural") for cand, ref in pairs for level in compare_arguments(cand, ref).values()))


def schema_valid(case: CallCase) -> float | None:
    """1 when every call names an offered function and its arguments validate against that function's JSON schema."""
    if not case.calls:
        return None
    offered = {t["function"]["name"]: t["function"].get("parameters") or {} for t in case.tools if isinstance(t.get("function"), dict)}
    for call in case.calls:
        if call.function.name not in offered:
            return 0.0
        args = call.function.parsed_arguments()
        if not isinstance(args, dict) or not _valid(args, offered[call.function.name]):
            return 0.0
    return 1.0


def _valid(args: dict[str, Any], schema: dict[str, Any]) -> bool:
    import jsonschema

    try:
        return _validator(json.dumps(schema, sort_keys=True)).is_valid(args)
    except jsonschema.exceptions.SchemaError:
        return True  # the application's own schema is broken: the call cannot be blamed for it


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def pair_calls(calls: list[ToolCall], reference: list[ToolCall]) -> list[tuple[ToolCall, ToolCall]] | None:
    """Each reference call with the answer's call of the same function (parallel calls may come in any order).

    Among same-name calls the best-matching arguments pair first. None when the functions called differ."""
    if Counter(c.function.name for c in calls) != Counter(c.function.name for c in reference):
        return None
    left = list(calls)
    pairs = []
    for ref in reference:
        same = [c for c in left if c.function.name == ref.function.name]
        best = max(same, key=lambda c: sum(_RANK[level] for level in compare_arguments(c, ref).values()))
        left.remove(best)
        pairs.append((best, ref))
    return pairs


def compare_arguments(call: ToolCall, reference: ToolCall) -> dict[str, str]:
    """Per argument name: `exact`, `structural`, `free_text` or `mismatch` (the reference's view; extras mismatch)."""
    cand, ref = call.function.parsed_arguments(), reference.function.parsed_arguments()
    if not isinstance(cand, dict) or not isinstance(ref, dict):
        return {"(arguments)": "exact" if call.function.arguments.strip() == reference.function.arguments.strip() else "mismatch"}
    out = {}
    for key in sorted(set(cand) | set(ref)):
        out[key] = _level(cand.get(key, _MISSING), ref.get(key, _MISSING))
    return out


def _level(value: Any, expected: Any) -> str:
    if value is _MISSING or expected is _MISSING:
        return "mismatch"
    if json.dumps(value, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False):
        return "exact"
    if _same(value, expected):
        return "structural"
    if isinstance(value, str) and isinstance(expected, str):
        return "free_text"
    return "mismatch"


def _same(a: Any, b: Any) -> bool:
    # bool is an int in Python: True must not equal 1 here, since the JSON schema tells them apart.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def checks_text(case: CallCase) -> str:
    """What llamaduo measured about one tool-call answer, for the judge's tool rubric (plain lines, no model text)."""
    called = "calls " + ", ".join(c.function.name for c in case.calls) if case.calls else "answers in text"
    expected = "calls " + ", ".join(c.function.name for c in case.reference) if case.reference else "answers in text"
    lines = [f"decision: the candidate {called}; the reference {expected} ({'right' if decision(case) else 'WRONG'} decision)"]
    if case.calls and case.reference:
        pairs = pair_calls(case.calls, case.reference)
        if pairs is None:
            lines.append("functions: the candidate calls other functions than the reference")
        else:
            lines.append("functions: the same as the reference")
            for cand, ref in pairs:
                levels = compare_arguments(cand, ref)
                judged = [k for k, v in levels.items() if v == "free_text"]
                wrong = [k for k, v in levels.items() if v == "mismatch"]
                lines.append(
                    f"{ref.function.name}: arguments equal: {', '.join(k for k, v in levels.items() if v in ('exact', 'structural')) or 'none'}; "
                    f"different: {', '.join(wrong) or 'none'}; free text to compare by meaning: {', '.join(judged) or 'none'}"
                )
    if case.calls:
        lines.append(f"schema: the candidate's arguments {'validate against' if schema_valid(case) else 'do NOT validate against'} the offered schemas")
    return "\n".join(lines)


def calls_text(calls: list[ToolCall]) -> str:
    return "\n".join(tool_call_text(c) for c in calls)
