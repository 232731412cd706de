"""The model card beside an export: the right verbs, and service spend from the ledger only."""

from __future__ import annotations

import json
from types import SimpleNamespace

from llamaduo.config import load_config
from llamaduo.deploy.modelcard import model_card
from llamaduo.deploy.parity import ParityReport
from llamaduo.service.cache import ServiceStore


def card(tmp_path, reports: dict[int, dict]) -> str:
    config = load_config(data={"project": {"workdir": str(tmp_path)}})
    root = tmp_path / "runs" / "r1"
    for k, report in reports.items():
        (root / "eval" / f"iter-{k}").mkdir(parents=True)
        (root / "eval" / f"iter-{k}" / "report.json").write_text(json.dumps(report))
    root.mkdir(parents=True, exist_ok=True)
    result = SimpleNamespace(format="gguf", quantization="q8_0", files={}, prompts_source="test prompts",
                             parity=ParityReport(format="gguf", prompts=2, passed=True))
    return model_card(config, root, tmp_path / "merged", result)


def test_a_run_without_evaluation_names_the_real_verb(tmp_path):
    text = card(tmp_path, {})
    assert "`llamaduo eval`" in text and "llamaduo evaluate" not in text
    assert "The service ledger holds no calls for this run." in text


def test_spend_comes_from_the_ledger_not_the_eval_report(tmp_path):
    store = ServiceStore(tmp_path / ".llamaduo" / "cache.sqlite")
    for iteration, stage, cost in ((1, "evaluate", 0.25), (2, "synth", 0.5), (2, "evaluate", 0.125), (None, "check", 0.001)):
        store.add_ledger({"run_id": "r1", "iteration": iteration, "stage": stage, "cost_usd": cost})
    store.add_ledger({"run_id": "other", "iteration": 1, "stage": "evaluate", "cost_usd": 9.0})
    store.close()
    # The eval report's own cost_usd counts only its new judge calls: it must not be shown as the spend.
    text = card(tmp_path, {1: {"iteration": 1, "cost_usd": 0.2, "answers": 4}})
    assert "cost_usd" not in text and "| answers | 4 |" in text
    assert "| 1 | 1 | 0.2500 |" in text and "| 2 | 2 | 0.6250 |" in text and "| outside the loop | 1 | 0.0010 |" in text
    assert "| total | 4 | 0.8760 |" in text
