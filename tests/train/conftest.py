"""Fixtures of the training tests: one tiny Llama-shaped model per session and configs pointing at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


def tiny_config(workdir: Path, model: Path, **train: Any) -> Any:
    from llamaduo.config import load_config

    settings = {"base_model": str(model), "max_steps": 4, "batch_size": 4, "save_steps": 2, "logging_steps": 1, "max_seq_len": 128, "learning_rate": 5e-3}
    settings.update(train)
    return load_config(data={"project": {"workdir": str(workdir)}, "train": settings})
