"""A scripted service LLM for loop tests and the kill/resume benchmark: echo-task pairs and a fixed judge verdict."""

from __future__ import annotations

import hashlib
import json
import random

from tests.fakes.protocols import ChatCall
from tests.tiny import WORDS


class LoopService:
    """Generator calls get two distinct pairs; judge calls get fixed similarity/precision scores (quality ratings: 8)."""

    def __init__(self, similarity: float = 40, precision: float = 45):
        self.similarity, self.precision = similarity, precision

    def __call__(self, call: ChatCall) -> str:
        props = (call.schema or {}).get("properties", {})
        if "similarity" in props:
            return json.dumps({"similarity": self.similarity, "similarity_reason": "close", "precision": self.precision, "precision_reason": "ok"})
        if "score" in props:  # the synthetic-pair quality gate (synth.min_quality)
            return json.dumps({"score": 8, "reason": "clear"})
        # A deterministic function of the prompt, so an interrupted and an uninterrupted run see the same pairs.
        rng = random.Random(hashlib.sha256(call.last_user.encode()).hexdigest())
        item = next(iter(call.schema["$defs"].values())) if call.schema and "$defs" in call.schema else {"properties": {}}
        pairs = []
        for _ in range(2):
            words = " ".join(rng.sample(WORDS, 3))
            pairs.append({name: (f"repeat: {words}" if i == 0 else words) for i, name in enumerate(item["properties"])})
        return json.dumps({"pairs": pairs})
