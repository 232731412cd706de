"""A tiny split project wired to the fake service server, and a scripted generator that writes distinct pairs."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from llamaduo.data import ingest, split
from tests.data.factory import dolly_rows, sentence, write_jsonl
from tests.fakes import ChatCall


def pair_values(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One generated pair that fits the item schema of a generator request, with fresh random text."""
    item = next(iter(schema["$defs"].values()))
    values: dict[str, Any] = {}
    for name, prop in item["properties"].items():
        values[name] = ["yes", "no"] if prop.get("type") == "array" else sentence(rng, 12)
    if "label" in values:
        values["label"] = "yes"
    return values


class Generator:
    """Responder for the fake server: distinct valid pairs for generator calls, a fixed score for judge calls."""

    def __init__(self, pairs: int = 3, score: int = 8):
        self.pairs = pairs
        self.score = score
        self.counter = itertools.count()
        self.prompts: list[str] = []

    def __call__(self, call: ChatCall) -> str:
        schema = call.schema or {}
        if "score" in schema.get("properties", {}):
            return json.dumps({"score": self.score, "reason": "fine"})
        self.prompts.append(call.last_user)
        rng = random.Random(next(self.counter))
        return json.dumps({"pairs": [pair_values(schema, rng) for _ in range(self.pairs)]})


@pytest.fixture
def synth_config(service_config: Any, tmp_path: Any) -> Any:
    """Two tasks (closed_qa, coding) with 10 rows each, split with 2 test items per task; sequential generator."""
    config = service_config
    config.data.test_size = 2
    config.synth.concurrency = 1
    config.synth.pairs_per_call = 3
    config.synth.seeds_per_call = 2
    ingest(config, [str(write_jsonl(tmp_path / "qa.jsonl", dolly_rows(10, seed=11, category="closed_qa")))], task="closed_qa")
    code = [{"instruction": f"Write function number {i}: " + sentence(random.Random(i), 8), "input": "", "output": "def f():\n    return " + str(i)} for i in range(10)]
    ingest(config, [str(write_jsonl(tmp_path / "code.jsonl", code))], task="coding")
    split(config)
    return config


@pytest.fixture
def generator(fake_service: Any) -> Generator:
    responder = Generator()
    fake_service.responder = responder
    return responder
