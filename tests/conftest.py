"""Shared fixtures: the location of the real data in ../shared/data."""

from __future__ import annotations

import os
import sys
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llamacpp: loads a GGUF with llama.cpp; skipped, with the reason, where llama.cpp cannot run")


def llamacpp_unusable() -> str | None:
    """Why llama.cpp cannot run here (None: it can), from the load-path probe, which runs in child processes.

    A native crash in a test would end the whole run; the probe crashes only its child, and the engines then take
    the path that worked. Where neither does, the marked tests skip with the reason and tests/infer/test_native.py fails with it.
    """
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'llamaduo[llamacpp]')"
    from llamaduo.errors import LlamaduoError
    from llamaduo.infer.native import llamacpp_probe

    try:
        record = llamacpp_probe()
    except LlamaduoError as exc:
        return exc.message
    return None if record.path != "none" else f"llama.cpp cannot run on this machine: {record.reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("llamacpp")]
    reason = llamacpp_unusable() if marked else None
    if reason:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `llamaduo ARGS` in-process (from folder `cwd`, if given); returns (exit code, stdout, stderr)."""
    from llamaduo.cli.app import main

    def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["llamaduo", *args])
        monkeypatch.setenv("NO_COLOR", "1")
        monkeypatch.setenv("COLUMNS", "200")
        old = os.getcwd()
        os.chdir(cwd or old)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(old)
        out, err = capsys.readouterr()
        return code, out, err

    return run
