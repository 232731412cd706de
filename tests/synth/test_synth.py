"""`synth` against the fake OpenAI-compatible server: accepted pairs, provenance, gate report, bad replies, resume."""

from __future__ import annotations

import json

from llamaduo.atomic import read_jsonl
from llamaduo.data import DatasetStore
from llamaduo.synth import run_synth
from llamaduo.synth.engine import STATE_DIR


def test_generates_n_accepted_pairs_with_provenance(synth_config, generator, fake_service):
    report = run_synth(synth_config, 7, run="r1")
    assert report.accepted == 7 and report.stop_reason == "target_reached"
    assert report.accepted_by_task == {"closed_qa": 4, "coding": 3}
    store = DatasetStore(synth_config.path("data"))
    rows = store.examples("synthetic")
    assert len(rows) == 7 and len({r.id for r in rows}) == 7
    info = store.info(report.synthetic_version)
    assert info.stage == "synth" and store.latest("train") in info.parents and store.latest("test") in info.parents
    train_ids = {e.id for e in store.examples("train")}
    prov = rows[0].metadata["provenance"]
    assert prov["generator"] == "openai/gpt-4o-mini" and prov["template"].startswith(rows[0].task + "/v1@")
    assert len(prov["seed_ids"]) == 2 and set(prov["seed_ids"]) <= train_ids and rows[0].metadata["synthetic"] is True
    schema_gate = report.gate_report.gates[0]
    assert schema_gate.gate == "schema_length_language" and schema_gate.checked == report.pairs_generated
    assert report.surplus + report.accepted == report.gate_report.gates[3].passed  # quality gate off: decontam output
    body = fake_service.received("openai.chat")[0].json
    assert body["response_format"]["type"] == "json_schema"
    prompt = body["messages"][0]["content"]
    assert "Write 3 new" in prompt and "[Satisfactory answer]" in prompt
    saved = json.loads((synth_config.path("runs") / "r1" / STATE_DIR / "gate_report.json").read_text())
    assert saved["gates"][0]["checked"] == report.pairs_generated


def test_seeds_are_drawn_without_replacement_within_a_round(synth_config, generator):
    synth_config.synth.seeds_per_call = 2
    report = run_synth(synth_config, 12, task="coding", run="seeds")
    rows = DatasetStore(synth_config.path("data")).examples("synthetic")
    by_call: dict[str, list[str]] = {}
    for row in rows:
        by_call[row.metadata["provenance"]["call"]] = row.metadata["provenance"]["seed_ids"]
    first_round = [by_call[f"coding#{i}"] for i in range(4) if f"coding#{i}" in by_call]  # 8 train rows / k=2 = 4 calls a round
    flat = [s for seeds in first_round for s in seeds]
    assert len(flat) == len(set(flat)) and report.accepted == 12


def test_bad_generator_replies_are_counted_and_dropped(synth_config, generator, fake_service):
    huge = json.dumps({"pairs": [{"instruction": "write it " * 2000, "answer": "x " * 5000}]})
    missing = json.dumps({"pairs": [{"instruction": "only half"}]})
    fake_service.enqueue("not json at all", "still not json", missing, missing, "", "", huge)
    report = run_synth(synth_config, 3, task="coding", run="bad")
    assert report.accepted == 3
    invalid = report.gate_report.invalid_replies
    assert invalid == {"not_json": 2, "schema_mismatch": 1}
    assert report.gate_report.gates[0].dropped == {"too_long": 1}


def test_duplicates_near_copies_and_test_leaks_are_dropped(synth_config, fake_service):
    store = DatasetStore(synth_config.path("data"))
    leak = next(e for e in store.examples("test") if e.task == "coding")
    fresh = {"instruction": "Write a function that returns the sum of two numbers given as strings please", "answer": "def add(a, b):\n    return int(a) + int(b)"}
    near = dict(fresh, instruction=fresh["instruction"].upper() + "!")
    copy_of_test = {"instruction": leak.instruction, "answer": leak.reference}
    fake_service.responder = lambda call: json.dumps({"pairs": [fresh, near, copy_of_test]})
    synth_config.synth.max_calls = 1
    report = run_synth(synth_config, 3, task="coding", run="dups")
    gates = {g.gate: g.dropped for g in report.gate_report.gates}
    assert report.accepted == 1 and report.stop_reason == "max_calls"
    assert gates["exact_dedup"] == {"duplicate": 1} and gates["decontamination"] == {"test_exact": 1}


def test_quality_gate_uses_the_judge(synth_config, generator):
    synth_config.synth.min_quality = 9
    generator.score = 5
    synth_config.synth.max_calls = 2
    low = run_synth(synth_config, 2, task="closed_qa", run="q1")
    assert low.accepted == 0 and low.gate_report.gates[4].dropped == {"low_quality": 6}
    generator.score = 9
    synth_config.synth.seed = 5  # other seeds, so new prompts: the low-scored replies stay cached for the old ones
    high = run_synth(synth_config, 2, task="closed_qa", run="q2")
    rows = DatasetStore(synth_config.path("data")).examples("synthetic")
    assert high.accepted == 2 and all(r.metadata["provenance"]["quality"] == 9 for r in rows)


def test_budget_stops_the_run_cleanly(synth_config, generator):
    synth_config.service.budget_usd = 1e-7
    report = run_synth(synth_config, 5, run="poor")
    assert report.stop_reason == "budget" and report.accepted == 0 and report.synthetic_version is None


def test_resume_after_a_crash_loses_and_duplicates_nothing(synth_config, generator, fake_service):
    synth_config.synth.max_calls = 2
    partial = run_synth(synth_config, 9, task="coding", run="resume")
    assert partial.stop_reason == "max_calls" and partial.accepted == 6
    state = synth_config.path("runs") / "resume" / STATE_DIR
    # Simulate kill -9 in the middle of recording call #1: its pairs are on disk, its "done" line is not,
    # and a torn half line ends the accepted log.
    calls = (state / "calls.jsonl").read_text().splitlines()
    (state / "calls.jsonl").write_text(calls[0] + "\n")
    with (state / "accepted.jsonl").open("a") as fh:
        fh.write('{"call": "coding#1", "exam')
    (state / "state.json").write_text(json.dumps({"kind": "synth", "n": 9, "tasks": ["coding"], "status": "running"}))
    requests_before = fake_service.count("openai.chat")
    synth_config.synth.max_calls = 10
    resumed = run_synth(synth_config, 9, task="coding")  # no run id: picks the unfinished run with the same target
    assert resumed.run_id == "resume" and resumed.resumed and resumed.accepted == 9
    assert fake_service.count("openai.chat") - requests_before == 1  # call #1 came from the cache; only #2 was paid
    lines = [r for r in read_jsonl(state / "accepted.jsonl")]
    ids = [r["example"]["id"] for r in lines]
    assert len(ids) == len(set(ids)) == 9
    assert len(DatasetStore(synth_config.path("data")).examples("synthetic")) == 9
    again = run_synth(synth_config, 9, task="coding", run="resume")
    assert again.accepted == 9 and fake_service.count("openai.chat") - requests_before == 1
