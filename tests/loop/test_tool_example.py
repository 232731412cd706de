"""The tool-calling example (BFCL rows shipped in examples/) end to end, offline: ingest, split, the loop on the tiny
model with the fake service as generator and judge, and the report's tool-call metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from llamaduo.loop.pipeline import Pipeline
from llamaduo.report.api import build_report
from tests.fakes.fixtures import FAKE_KEY
from tests.fakes.protocols import ChatCall

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tool_calling.yaml"
TOOL_METRICS = ("tool_decision", "tool_name", "tool_args_exact", "tool_schema_valid")
_VALUES = {"string": "Berlin", "integer": 3, "number": 2.5, "boolean": True, "array": [], "object": {}}


class ToolService:
    """Judge: fixed verdicts. Generator: for each request, a call to the first offered function with its required
    arguments filled by type, and a text answer (the decision not to call)."""

    def __init__(self) -> None:
        self.generator_prompts: list[str] = []
        self.judge_items: list[str] = []

    def __call__(self, call: ChatCall) -> str:
        props = (call.schema or {}).get("properties", {})
        if "similarity" in props:
            self.judge_items.append(call.last_user)
            return json.dumps({"similarity": 55, "similarity_reason": "r", "precision": 60, "precision_reason": "r"})
        self.generator_prompts.append(call.last_user)
        tools = [json.loads(line) for line in call.last_user.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0].splitlines()]
        fn = tools[0]
        params = fn["parameters"]
        args = {k: _VALUES.get(params["properties"].get(k, {}).get("type"), "x") for k in params.get("required", [])}
        rng = random.Random(len(self.generator_prompts))
        topic = " ".join(rng.sample(["river", "copper", "violet", "engine", "garden", "harbor", "lantern", "maple", "quartz", "saddle"], 5))
        return json.dumps({"pairs": [
            {"request": f"Please use {fn['name']} for the {topic} case", "tool_calls": [{"name": fn["name"], "arguments": json.dumps(args)}], "response": ""},
            {"request": f"Write me a short poem about the {topic}", "tool_calls": [], "response": f"A poem about the {topic}."},
        ]})


def example_config(tmp_path: Path, service_url: str, model: Path) -> dict:
    """The shipped example config, pointed at the fake service and the tiny model, with a CPU-sized loop."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": service_url, "api_key_env": "FAKE_SERVICE_KEY",
            "limits": {"timeout_s": 5, "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}}
    data["project"]["workdir"] = str(tmp_path)
    data["data"]["sources"][0]["path"] = str(REPO / data["data"]["sources"][0]["path"])
    data["service"] = {"generator": role, "judge": [role]}
    data["synth"].update(concurrency=1, language=None)
    data["train"].update(base_model=str(model), max_steps=2, batch_size=4, save_steps=2, logging_steps=1, max_seq_len=4096)
    data["infer"].update(max_new_tokens=8, batch_size=8)
    data["evaluate"].update(repeats=1, bootstrap=100)
    data["loop"] = {"max_iterations": 2, "schedule": {"size": 4}, "baseline": True}
    return data


def test_tool_calling_example_runs_end_to_end_and_reports_tool_metrics(fake_service, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    service = ToolService()
    fake_service.responder = service
    pipeline = Pipeline.from_config(example_config(tmp_path, fake_service.openai_base_url, tiny_model))
    state = pipeline.run()
    assert state.status == "done" and [r.iteration for r in state.iterations] == [0, 1, 2]
    assert state.iterations[2].synthetic_added > 0

    test = pipeline.store.examples("test")
    assert len(test) == 30 and all(e.tools for e in test)
    for record in state.iterations:
        for name in ("tool_decision", "tool_args_exact"):
            assert record.judge_free[f"{name}.mean"].mean is not None
    # The tiny model writes no calls: it answers every prompt in text, which is right for the irrelevance rows only.
    calling = sum(1 for e in test if e.reference_tool_calls)
    assert state.iterations[2].judge_free["tool_decision.mean"].mean == 100 * (len(test) - calling) / len(test)
    assert state.iterations[2].judge_free["tool_args_exact.mean"].mean == 0.0

    # The judge saw the tool rubric with the offered tools and the measured checks.
    assert service.judge_items and all("<<<TOOLS>>>" in item and "<<<CHECKS>>>" in item for item in service.judge_items)
    # Synthesis was shown the offered tools, and what it added carries them and calls only offered functions.
    assert "<tools>" in service.generator_prompts[0]
    synthetic = pipeline.store.examples("synthetic")
    assert synthetic and all(e.tools for e in synthetic)
    assert all(c.function.name in {t["function"]["name"] for t in e.tools} for e in synthetic for c in e.reference_tool_calls or [])

    report = build_report(pipeline.config, state.run_id, tmp_path / "report")
    markdown = Path(report.markdown_path).read_text(encoding="utf-8")
    header = next(line for line in markdown.splitlines() if line.startswith("| model"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = [c.strip() for c in next(line for line in markdown.splitlines() if line.startswith("| iteration 2")).strip("|").split("|")]
    shown = dict(zip(columns, row, strict=True))
    assert shown["tool_decision.mean [95% CI]"].startswith(f"{100 * (len(test) - calling) / len(test):.1f}")
    assert shown["tool_args_exact.mean [95% CI]"] == "0.0" and shown["tool_name.mean [95% CI]"] == "0.0"


def test_bfcl_converter_writes_openai_rows_with_json_schema_tools(tmp_path):
    import subprocess
    import sys

    from llamaduo.evaluate.metrics.tool_calls import CallCase, schema_valid
    from llamaduo.records import ToolCall

    data = tmp_path / "bfcl"
    (data / "possible_answer").mkdir(parents=True)
    fn = {"name": "geo.distance", "description": "d", "parameters": {"type": "dict", "properties": {
        "points": {"type": "tuple", "items": {"type": "float"}}, "type": {"type": "string"}, "opts": {"type": "dict", "properties": {"km": {"type": "boolean"}}},
        "extra": {"type": "any"}}, "required": ["points"]}}
    rows = {"simple_python": [{"id": "simple_python_0", "question": [[{"role": "user", "content": "How far?"}]], "function": [fn]}],
            "multiple": [], "parallel": [], "irrelevance": [{"id": "irrelevance_0", "question": [[{"role": "user", "content": "Sing."}]], "function": [fn]}]}
    answers = {"simple_python": [{"id": "simple_python_0", "ground_truth": [{"geo.distance": {"points": [[1.5, 2.0]], "type": ["road", "air"],
                                                                                              "opts": [{"km": [True, ""]}], "extra": ["", 3]}}]}]}
    for category, items in rows.items():
        (data / f"BFCL_v4_{category}.json").write_text("".join(json.dumps(r) + "\n" for r in items) or "\n")
        (data / "possible_answer" / f"BFCL_v4_{category}.json").write_text("".join(json.dumps(r) + "\n" for r in answers.get(category, [])) or "\n")
    out = tmp_path / "out.jsonl"
    subprocess.run([sys.executable, str(REPO / "examples" / "tool_calling" / "convert_bfcl.py"), str(data), str(out)], check=True, capture_output=True)
    call_row, text_row = [json.loads(line) for line in out.read_text().splitlines()]
    tool = call_row["tools"][0]["function"]
    assert tool["name"] == "geo_distance" and tool["parameters"]["type"] == "object"
    assert tool["parameters"]["properties"]["points"] == {"type": "array", "items": {"type": "number"}}
    assert tool["parameters"]["properties"]["type"] == {"type": "string"} and "type" not in tool["parameters"]["properties"]["extra"]
    call = call_row["messages"][-1]["tool_calls"][0]["function"]
    assert call["name"] == "geo_distance" and json.loads(call["arguments"]) == {"points": [1.5, 2.0], "type": "road", "opts": {"km": True}}
    assert schema_valid(CallCase([ToolCall.model_validate(call_row["messages"][-1]["tool_calls"][0])], [], call_row["tools"])) == 1.0
    assert text_row["messages"][-1] == {"role": "assistant", "content": "None of my functions can do that."}
    assert call_row["metadata"] == {"bfcl_id": "simple_python_0", "category": "simple_python"}
