"""The generated references in docs/ must match the code; run `python -m llamaduo.docs` to refresh them."""

from __future__ import annotations

from pathlib import Path

from llamaduo.docs import cli_reference, config_reference

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_config_reference_is_current():
    assert (DOCS / "config.md").read_text() == config_reference(), "docs/config.md drifted: run `python -m llamaduo.docs`"


def test_cli_reference_is_current():
    assert (DOCS / "cli.md").read_text() == cli_reference(), "docs/cli.md drifted: run `python -m llamaduo.docs`"
