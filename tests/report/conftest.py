"""Fixtures of the report tests: a project folder with a finished demo run, and the CLI run in-process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.report.runfixture import make_run, project_config


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory):
    """A project with one finished three-iteration run (`demo-run`)."""
    root = tmp_path_factory.mktemp("project")
    config = project_config(root)
    make_run(config)
    return root, config


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `llamaduo ARGS` in-process from a folder; returns (exit code, stdout, stderr)."""
    from llamaduo.cli.app import main

    def run(*args: str, cwd: Path) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["llamaduo", *args])
        monkeypatch.setenv("NO_COLOR", "1")
        monkeypatch.setenv("COLUMNS", "200")
        old = os.getcwd()
        os.chdir(cwd)
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
