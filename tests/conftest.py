"""Shared fixtures: the location of the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("LLAMADUO_SHARED_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repo (CI lays it there); tests that need it skip where it is absent."""
    path = _shared_data()
    if path is None:
        pytest.skip("../shared/data is not present beside the repository")
    return path


# The fake service server and its fixtures, shared by every stage's tests.
pytest_plugins = ["tests.fakes.fixtures"]
