"""Synthesis for tool-calling tasks: the generator is shown the offered tools, and every generated call must name an
offered function with arguments valid under its schema, or the pair is dropped before it can be trained on."""

from __future__ import annotations

import itertools
import json
import random

from llamaduo.data import DatasetStore, ingest, split
from llamaduo.synth import run_synth
from llamaduo.synth.engine import offered_tools
from tests.data.factory import VOCAB, write_jsonl
from tests.fakes import ChatCall


def _tool(name: str, param: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"{name} of a place",
                                             "parameters": {"type": "object", "properties": {param: {"type": "string"}}, "required": [param]}}}


WEATHER, TIME = _tool("get_weather", "city"), _tool("get_time", "zone")


def _rows(n: int) -> list[dict]:
    rng = random.Random(3)
    rows = []
    for i in range(n):
        words = " ".join(rng.sample(VOCAB, 6))
        tool, param = (WEATHER, "city") if i % 2 else (TIME, "zone")
        call = {"id": "c0", "type": "function", "function": {"name": tool["function"]["name"], "arguments": json.dumps({param: words.split()[0]})}}
        rows.append({"messages": [{"role": "user", "content": f"what is the {tool['function']['name'][4:]} where {words} please"},
                                  {"role": "assistant", "tool_calls": [call]}], "tools": [tool]})
    return rows


class ToolGenerator:
    """Replies with one valid call, one call to a function nobody offered, one call breaking the schema, one text answer."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.counter = itertools.count()

    def __call__(self, call: ChatCall) -> str:
        self.prompts.append(call.last_user)
        n = next(self.counter)
        offered = [json.loads(line)["name"] for line in call.last_user.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()]
        name = offered[0]
        param = "city" if name == "get_weather" else "zone"
        rng = random.Random(n)
        words = lambda: " ".join(rng.sample(VOCAB, 7))  # noqa: E731
        return json.dumps({"pairs": [
            {"request": f"tell me the {name} for {words()}", "tool_calls": [{"name": name, "arguments": json.dumps({param: words()})}], "response": ""},
            {"request": f"book a flight over {words()}", "tool_calls": [{"name": "book_flight", "arguments": "{}"}], "response": ""},
            {"request": f"what about {words()}", "tool_calls": [{"name": name, "arguments": json.dumps({"wrong": 1})}], "response": ""},
            {"request": f"write a poem on {words()}", "tool_calls": [], "response": f"A poem: {words()}."},
        ]})


def test_tool_tasks_are_synthesised_with_the_offered_tools(service_config, fake_service, tmp_path):
    config = service_config
    config.data.test_size = 2
    config.synth.concurrency = 1
    config.synth.pairs_per_call = 4
    config.synth.seeds_per_call = 2
    ingest(config, [str(write_jsonl(tmp_path / "tools.jsonl", _rows(12)))], task="assistant")
    split(config)
    generator = ToolGenerator()
    fake_service.responder = generator
    report = run_synth(config, 4, run="tools")
    assert report.accepted == 4 and report.stop_reason == "target_reached"
    assert report.gate_report.gates[0].dropped == {"invalid_tool_call": 4}  # two calls, each with one bad function and one bad schema
    prompt = generator.prompts[0]
    assert "<tools>" in prompt and '"name": "get_' in prompt and "<tool_call>" in prompt  # seeds show their calls
    store = DatasetStore(config.path("data"))
    train = {e.id: e for e in store.examples("train")}
    rows = store.examples("synthetic")
    calls = [r for r in rows if r.reference_tool_calls]
    assert len(calls) == 2 and len(rows) - len(calls) == 2  # the text answers are kept: deciding not to call is data
    for row in rows:
        seeds = [train[i] for i in row.metadata["provenance"]["seed_ids"]]
        assert row.tools == offered_tools(seeds) and row.metadata["provenance"]["template"].startswith("tool_calling/v1@")
    assert all(c.function.name in {t["function"]["name"] for t in r.tools} for r in calls for c in r.reference_tool_calls)


def test_offered_tools_are_the_union_of_the_seeds_tools_in_order():
    from llamaduo.records import Example, Message

    def ex(tools):
        return Example(id="x", task="t", messages=[Message(role="user", content="q")], tools=tools)

    assert offered_tools([ex([WEATHER]), ex([TIME, WEATHER]), ex(None)]) == [WEATHER, TIME]
