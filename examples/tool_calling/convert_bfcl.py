"""Turn Berkeley Function Calling Leaderboard (BFCL) rows into OpenAI fine-tuning JSONL with `tools`.

BFCL ships its questions, function definitions and possible answers in the `bfcl-eval` wheel (Apache-2.0).
Usage, offline once the wheel is downloaded (`pip download --no-deps -d /tmp/bfcl bfcl-eval`):

    python examples/tool_calling/convert_bfcl.py /tmp/bfcl/bfcl_eval-*.whl examples/tool_calling/bfcl_tool_calls.jsonl

What it changes, and why:
- BFCL's schema types (`dict`, `float`, `tuple`, `any`) become JSON-schema ones (`object`, `number`, `array`, none),
  so the definitions validate with jsonschema and can be sent to the OpenAI API as they are.
- Dots in function names become underscores (`math.factorial` -> `math_factorial`): OpenAI function names allow
  only letters, digits, `_` and `-`. BFCL's own OpenAI handler does the same.
- The reference call takes the first acceptable value of each argument; an argument whose first acceptable value is
  "" (BFCL: "may be left out") is left out.
- BFCL's `irrelevance` rows have no answer (no offered function fits); their reference is this script's fixed text
  answer, IRRELEVANT_ANSWER: the decision not to call is what they teach.
"""

from __future__ import annotations

import json
import random
import sys
import zipfile
from pathlib import Path
from typing import Any

CATEGORIES = {"simple_python": 70, "multiple": 50, "parallel": 30, "irrelevance": 50}
"""Rows sampled per BFCL category (seeded): single calls, a choice among functions, parallel calls, no call."""
IRRELEVANT_ANSWER = "None of my functions can do that."
"""Under 8 words on purpose: decontamination leaves answers that short out of its n-gram check, so this one
sentence, shared by every such row, does not make train rows look like leaks of test rows."""
_TYPES = {"dict": "object", "float": "number", "tuple": "array"}


def read_category(source: Path, category: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The questions of one category and its possible answers by id, from the wheel or an unpacked data folder."""
    names = (f"BFCL_v4_{category}.json", f"possible_answer/BFCL_v4_{category}.json")
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            texts = [wheel.read(f"bfcl_eval/data/{n}").decode("utf-8") if f"bfcl_eval/data/{n}" in wheel.namelist() else None for n in names]
    else:
        texts = [(source / n).read_text(encoding="utf-8") if (source / n).is_file() else None for n in names]
    if texts[0] is None:
        raise SystemExit(f"{source} holds no BFCL_v4_{category}.json; pass the bfcl-eval wheel or its bfcl_eval/data folder")
    questions = [json.loads(line) for line in texts[0].splitlines() if line.strip()]
    answers = {row["id"]: row["ground_truth"] for row in (json.loads(line) for line in (texts[1] or "").splitlines() if line.strip())}
    return questions, answers


def schema(node: Any) -> Any:
    """A BFCL parameter schema as JSON schema (only schema positions are rewritten: a property may be called `type`)."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if isinstance(out.get("type"), str):
        kind = _TYPES.get(out["type"], out["type"])
        if kind == "any":
            out.pop("type")
        else:
            out["type"] = kind
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: schema(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = schema(out[key])
    return out


def openai_name(name: str) -> str:
    return name.replace(".", "_")


def tool(function: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": openai_name(function["name"]), "description": function.get("description", ""),
                                             "parameters": schema(function.get("parameters", {"type": "object", "properties": {}}))}}


def first_value(options: Any) -> Any:
    """The first acceptable value; nested objects list acceptable values per key as well."""
    value = options[0] if isinstance(options, list) and options else options
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        return {k: first_value(v) for k, v in value.items() if not (v and v[0] == "")}
    return value


def row(question: dict[str, Any], truth: list[dict[str, Any]] | None, category: str) -> dict[str, Any]:
    messages = [{"role": m["role"], "content": m["content"]} for m in question["question"][0]]
    if truth:
        calls = []
        for k, call in enumerate(truth):
            (name, args), = call.items()
            arguments = {key: first_value(opts) for key, opts in args.items() if opts and opts[0] != ""}
            calls.append({"id": f"call_{k}", "type": "function", "function": {"name": openai_name(name), "arguments": json.dumps(arguments, ensure_ascii=False)}})
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
    else:
        messages.append({"role": "assistant", "content": IRRELEVANT_ANSWER})
    return {"messages": messages, "tools": [tool(f) for f in question["function"]], "metadata": {"bfcl_id": question["id"], "category": category}}


def convert(source: Path, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for category, count in CATEGORIES.items():
        questions, answers = read_category(source, category)
        chosen = sorted(random.Random(f"{seed}:{category}").sample(range(len(questions)), min(count, len(questions))))
        for i in chosen:
            truth = answers.get(questions[i]["id"])
            if category != "irrelevance" and not truth:
                continue
            rows.append(row(questions[i], truth, category))
    return rows


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: convert_bfcl.py BFCL_WHEEL_OR_DATA_FOLDER OUT.jsonl")
    rows = convert(Path(argv[0]))
    out = Path(argv[1])
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)  # never a half-written fixture
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
