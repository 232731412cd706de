"""Fixtures of the report tests: a project folder with a finished demo run, and the CLI run in-process."""

from __future__ import annotations

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
