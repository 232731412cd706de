"""Builders of tiny, distinct test rows (random words, so dedup never merges them by accident)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

VOCAB = (
    "river mountain copper violet engine garden thunder pencil harbor lantern maple quartz saddle "
    "tunnel velvet walnut yonder zephyr anchor basket candle dagger falcon glacier hammer island jungle "
    "kettle ladder meadow needle orchard pepper quiver ribbon summit timber umbrella vessel willow "
    "amber bronze cedar dune ember fjord grove heron iris jasper kelp lotus marble nectar onyx pebble "
    "raven sable tulip urchin vapor wren yarrow zinc acorn birch clover delta eagle fern granite hazel"
).split()


def sentence(rng: random.Random, words: int = 14) -> str:
    return "the " + " ".join(rng.choice(VOCAB) for _ in range(words)) + "."


def dolly_rows(count: int, seed: int = 0, category: str = "summarization") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"instruction": f"What does passage {i} say? " + sentence(rng, 6), "context": sentence(rng, 20), "response": sentence(rng, 12), "category": category}
        for i in range(count)
    ]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def project_config(tmp_path: Path, **data: Any) -> Any:
    from llamaduo.config import load_config

    return load_config(data={"project": {"workdir": str(tmp_path)}, "data": data})
