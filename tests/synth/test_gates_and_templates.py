"""Gate 1 checks, `apply_gates` on plain Examples, template overrides, and the `synth` CLI verb."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from llamaduo.cli.app import app
from llamaduo.config import load_config
from llamaduo.records import Example, Message
from llamaduo.synth import apply_gates, load_template
from llamaduo.synth.gates import looks_english


def pair(user: str, answer: str, **metadata) -> Example:
    messages = [Message(role="user", content=user), Message(role="assistant", content=answer)]
    return Example(id=Example.content_id("t", messages), task="t", messages=messages, metadata=metadata)


def test_schema_length_language_checks_in_order():
    config = load_config(data={"synth": {"max_chars": 200}})
    good = pair("Classify the sentiment of this review about a quiet hotel room", "positive", labels=["positive", "negative"])
    candidates = [
        good,
        pair("Classify the sentiment of this short review of the noisy train", "angry", labels=["positive", "negative"]),
        pair("", "an answer"),
        pair("Explain " + "very " * 60 + "slowly", "ok"),
        pair("Объясните, пожалуйста, как работает фотосинтез в растениях", "ответ"),
        pair("Der Hund und die Katze sind im Garten und spielen zusammen mit dem Ball", "ja"),
    ]
    passed, report = apply_gates(config, candidates)
    assert passed == [good]
    assert report.gates[0].dropped == {"label_not_in_set": 1, "empty_field": 1, "too_long": 1, "wrong_language": 2}
    assert report.gates[0].passed == 1 and report.gates[1].checked == 1
    assert looks_english("def add(a, b): return a + b") and looks_english("Write a Python function that adds two numbers")


def test_apply_gates_against_reference_and_test():
    reference = [pair("What is the tallest mountain on the island of copper and salt", "Mount Basalt is the tallest one there.")]
    test = [pair("Name the river that crosses the old walnut valley from north to south", "The Willow river crosses the walnut valley from north to south every year.")]
    candidates = [reference[0], test[0], pair("Describe how harbor lanterns were lit in the old days of sailing", "Keepers climbed with oil and matches each evening.")]
    passed, report = apply_gates(load_config(data={}), candidates, reference=reference, test=test)
    assert [p.id for p in passed] == [candidates[2].id]
    assert report.gates[1].dropped == {"duplicate": 1} and report.gates[3].dropped == {"test_exact": 1}


def test_template_override_is_used_and_versioned(tmp_path):
    (tmp_path / "mine.j2").write_text("{# template_version: 7 #}Custom prompt for {{ task }} with {{ m }} pairs.\n{% include '_seeds.j2' %}", encoding="utf-8")
    config = load_config(data={"project": {"workdir": str(tmp_path)}, "synth": {"templates": {"support": "mine.j2"}, "task_templates": {"support": "closed_qa"}}})
    template = load_template(config, "support")
    assert template.kind == "closed_qa" and template.version.startswith("mine/v7@")
    text = template.render(task="support", m=2, seeds=[{"prompt": "P1", "response": "R1"}])
    assert text.startswith("Custom prompt for support with 2 pairs.") and "P1" in text and "R1" in text
    builtin = load_template(config, "coding")
    assert builtin.kind == "coding" and builtin.version.startswith("coding/v1@")


def test_synth_cli_against_the_fake_server(synth_config, generator, tmp_path, fake_service):
    cfg = tmp_path / "llamaduo.yaml"
    data = synth_config.model_dump(mode="json")
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "-n", "4", "-c", str(cfg), "--run", "cli"])
    assert result.exit_code == 0, result.output
    assert "gate report" in result.output and "accepted 4/4 (target_reached)" in result.output
    as_json = runner.invoke(app, ["synth", "-n", "4", "-c", str(cfg), "--run", "cli", "--json"])
    report = json.loads(as_json.output)
    assert report["accepted"] == 4 and report["resumed"] is True and [g["gate"] for g in report["gate_report"]["gates"]] == [
        "schema_length_language", "exact_dedup", "near_dedup", "decontamination", "quality"]
