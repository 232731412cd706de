"""A loop project on the echo task: a tiny model, 24 chats, and both service roles at one (fake) endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.tiny import chats


def loop_config(project: Path, service_url: str, model: Path, **loop: Any) -> dict[str, Any]:
    project.mkdir(parents=True, exist_ok=True)
    data = project / "echo.jsonl"
    data.write_text("".join(json.dumps({"messages": [m.model_dump() for m in ex.messages]}) + "\n" for ex in chats(24, seed=3)))
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": service_url, "api_key_env": "FAKE_SERVICE_KEY",
            "limits": {"timeout_s": 5, "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}}
    return {
        "project": {"name": "loop-test", "workdir": str(project)},
        "service": {"generator": role, "judge": [role]},
        "data": {"sources": [{"path": str(data), "task": "general"}], "test_size": 4},
        "synth": {"seeds_per_call": 2, "pairs_per_call": 2, "concurrency": 1, "language": None},
        "train": {"base_model": str(model), "max_steps": 2, "batch_size": 4, "max_seq_len": 64, "save_steps": 1, "logging_steps": 1},
        "infer": {"max_new_tokens": 6, "batch_size": 8},
        "evaluate": {"repeats": 2, "metrics": ["rouge_l"], "bootstrap": 100, "target": {"precision.mean": 90}},
        "loop": {"max_iterations": 2, "schedule": {"size": 2}, **loop},
    }
