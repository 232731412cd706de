"""Tool-call judging: the judge-free metrics (decision, function name, arguments, schema) and the tool rubric."""

from __future__ import annotations

import json

import pytest

from llamaduo.evaluate import evaluate
from llamaduo.evaluate.metrics import METRICS
from llamaduo.evaluate.metrics.tool_calls import CallCase, args_exact, checks_text, compare_arguments, decision, name_accuracy, schema_valid
from llamaduo.records import Answer, Example, Message, ToolCall
from tests.evaluate.test_judge import REPLIES, item_text
from tests.fakes.fixtures import fake_config

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "search", "description": "Web search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "filters": {"type": "object"}}, "required": ["query"]}}}
TOOLS = [WEATHER, SEARCH]


def call(name: str, arguments: dict | str, call_id: str = "c") -> ToolCall:
    return ToolCall.model_validate({"id": call_id, "function": {"name": name, "arguments": arguments}})


def case(calls: list[ToolCall], reference: list[ToolCall]) -> CallCase:
    return CallCase(calls, reference, TOOLS)


def test_argument_levels_exact_structural_free_text_mismatch():
    ref = call("search", {"query": "weather in Paris", "filters": {"lang": "fr", "max": 5}})
    assert compare_arguments(call("search", '{"query": "weather in Paris", "filters": {"lang": "fr", "max": 5}}'), ref) == {"filters": "exact", "query": "exact"}
    same_json = call("search", '{"filters": {"max": 5.0, "lang": "fr"},   "query": "weather in Paris"}')
    assert compare_arguments(same_json, ref) == {"filters": "structural", "query": "exact"}
    assert compare_arguments(call("search", {"query": "Paris weather", "filters": {"lang": "fr", "max": 5}}), ref)["query"] == "free_text"
    assert compare_arguments(call("search", {"query": "weather in Paris"}), ref)["filters"] == "mismatch"
    assert compare_arguments(call("search", {"query": "x", "filters": {"lang": "fr", "max": True}}), call("search", {"query": "x", "filters": {"lang": "fr", "max": 1}}))["filters"] == "mismatch"


def test_decision_name_and_argument_metrics():
    paris, rome = call("get_weather", {"city": "Paris"}, "a"), call("get_weather", {"city": "Rome"}, "b")
    assert (decision(case([paris], [paris])), name_accuracy(case([paris], [paris])), args_exact(case([paris], [paris]))) == (1.0, 1.0, 1.0)
    assert (decision(case([], [paris])), name_accuracy(case([], [paris])), args_exact(case([], [paris]))) == (0.0, 0.0, 0.0)
    assert (decision(case([paris], [])), name_accuracy(case([paris], [])), args_exact(case([paris], []))) == (0.0, None, None)
    assert decision(case([], [])) == 1.0  # answering in text when the reference does is the right decision
    assert args_exact(case([rome, paris], [paris, rome])) == 1.0  # parallel calls in another order
    assert args_exact(case([paris, paris], [paris, rome])) == 0.0
    wrong_fn = call("search", {"query": "Paris"})
    assert name_accuracy(case([wrong_fn], [paris])) == 0.0 and args_exact(case([wrong_fn], [paris])) == 0.0
    assert args_exact(case([call("get_weather", {"city": "paris"})], [paris])) == 0.0  # free text differs: a judge's call


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ([call("get_weather", {"city": "Paris", "days": 3, "unit": "celsius"})], 1.0),
        ([call("get_weather", {"days": 3})], 0.0),  # required city missing
        ([call("get_weather", {"city": "Paris", "days": 0})], 0.0),  # below the minimum
        ([call("get_weather", {"city": "Paris", "unit": "kelvin"})], 0.0),  # not in the enum
        ([call("get_weather", "{city: Paris")], 0.0),  # arguments that do not parse
        ([call("get_time", {})], 0.0),  # a function that was not offered
        ([call("get_weather", {"city": "Paris"}), call("search", {"query": 3})], 0.0),  # one bad call of two
        ([], None),
    ],
)
def test_schema_validity(calls, expected):
    assert schema_valid(case(calls, [])) == expected


def _example(i: int, prompt: str, reference: Message) -> Example:
    messages = [Message(role="user", content=prompt), reference]
    return Example(id=Example.content_id("tools", messages, TOOLS), task="tools", messages=messages, tools=TOOLS)


def _answer(ex: Example, calls: list[ToolCall] | None = None, text: str = "") -> Answer:
    return Answer(example_id=ex.id, task=ex.task, messages=ex.prompt, reference=ex.reference, text=text, tool_calls=calls)


def _data():
    paris = call("get_weather", {"city": "Paris"})
    examples = [
        _example(0, "Weather in Paris?", Message(role="assistant", tool_calls=[paris])),
        _example(1, "Weather in Rome for 3 days?", Message(role="assistant", tool_calls=[call("get_weather", {"city": "Rome", "days": 3})])),
        _example(2, "Search the web for llamas", Message(role="assistant", tool_calls=[call("search", {"query": "llamas"})])),
        _example(3, "Thanks, that is all.", Message(role="assistant", content="You're welcome!")),
    ]
    answers = [
        _answer(examples[0], [paris]),  # right
        _answer(examples[1], [call("get_weather", {"city": "Rome", "days": "3"})]),  # right function, days as a string
        _answer(examples[2], text="Llamas are camelids."),  # should have called
        _answer(examples[3], text="Glad to help!"),  # right not to call
    ]
    plain = Example(id="plain", task="tools", messages=[Message(role="user", content="Hi"), Message(role="assistant", content="Hello")])
    answers.append(Answer(example_id="plain", task="tools", messages=plain.prompt, reference="Hello", text="Hello"))
    return examples + [plain], answers


def test_evaluate_reports_tool_metrics_judge_free(tmp_path):
    from llamaduo.config import load_config

    config = load_config(data={"project": {"workdir": str(tmp_path)}, "evaluate": {"judge": False, "bootstrap": 200, "metrics": ["rouge_l", *[m for m in METRICS if m.startswith("tool_")]]}})
    examples, answers = _data()
    report = evaluate(config, answers, examples=examples)
    means = {name: view.per_sample.mean for name, view in report.metrics.items()}
    assert means["tool_decision"] == pytest.approx(100 * 3 / 4)  # 4 prompts offered tools; the plain one is not counted
    assert report.metrics["tool_decision"].per_sample.n == 4
    assert means["tool_name"] == pytest.approx(100 * 2 / 3) and report.metrics["tool_name"].per_sample.n == 3
    assert means["tool_args_exact"] == pytest.approx(100 * 1 / 3)
    assert means["tool_schema_valid"] == pytest.approx(50.0) and report.metrics["tool_schema_valid"].per_sample.n == 2
    assert means["rouge_l"] > 0  # text metrics read the calls written out, not an empty answer


def test_tool_prompts_get_the_tool_rubric_with_checks(fake_service, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", "sk-fake-test-key-0123456789abcdef")
    config = fake_config(fake_service, tmp_path)
    config.evaluate.metrics = ["tool_decision"]
    config.evaluate.repeats = 1
    config.evaluate.bootstrap = 200
    seen = []
    fake_service.responder = lambda c: seen.append(c) or REPLIES["GOOD"]
    examples, answers = _data()
    report = evaluate(config, answers, examples=examples)
    items = {item_text(c): c for c in seen}
    tool_items = [text for text in items if "<<<TOOLS>>>" in text]
    assert len(tool_items) == 4 and len(items) == 5  # the plain prompt keeps the pointwise rubric
    rome = next(t for t in tool_items if "Rome" in t)
    assert '"name": "get_weather"' in rome and "different: days" in rome and "do NOT validate" in rome
    assert "<tool_call>" in rome.split("<<<CANDIDATE>>>")[1]  # the candidate is judged on its calls
    missed = next(t for t in tool_items if "llamas" in t)
    assert "WRONG decision" in missed
    system = {c.messages[0]["content"][:60] for c in seen}
    assert len(system) == 2
    assert report.metrics["precision"].per_sample.n == 5 and json.loads(REPLIES["GOOD"])["precision"] == report.metrics["precision"].per_sample.mean


def test_checks_text_names_free_text_arguments():
    ref = call("search", {"query": "weather in Paris"})
    text = checks_text(case([call("search", {"query": "Paris weather"})], [ref]))
    assert "free text to compare by meaning: query" in text and "right decision" in text
