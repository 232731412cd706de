"""Fixtures of the inference tests: the tiny chat model (its generation stops at <|im_end|>)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-infer") / "model")
