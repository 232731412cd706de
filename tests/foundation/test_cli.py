"""The CLI as a user meets it: --help everywhere, --version, init, config show, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from llamaduo import __version__
from llamaduo.cli.app import app

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NO_COLOR": "1", "TERMINAL_WIDTH": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llamaduo", *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=120
    )


def all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def visit(cmd, path):
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            visit(sub, path + [name])

    visit(typer.main.get_command(app), [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version(tmp_path):
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"llamaduo {__version__}"


def test_init_then_show_then_refuse_overwrite(tmp_path):
    assert run_cli("init", "--name", "demo", cwd=tmp_path).returncode == 0
    shown = run_cli("config", "show", "--set", "train.epochs=2", cwd=tmp_path)
    assert shown.returncode == 0 and "epochs: 2" in shown.stdout and "name: demo" in shown.stdout
    again = run_cli("init", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("train:\n  epochs: [1\n", "Fix the YAML syntax"),
        ("servce: {}\n", "Did you mean `service`?"),
        ("train:\n  epochs: lots\n", "`train.epochs`"),
        ("service:\n  generator:\n    provider: opneai\n", "not one of"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, yaml_text, needle):
    (tmp_path / "llamaduo.yaml").write_text(yaml_text)
    out = run_cli("config", "show", cwd=tmp_path)
    assert out.returncode == 2
    assert needle in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llamaduo.yaml"]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "llamaduo.yaml").write_text("servce: {}\n")
    out = run_cli("--debug", "config", "show", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_wrong_flag_exits_2(tmp_path):
    out = run_cli("config", "show", "--bogus", cwd=tmp_path)
    assert out.returncode == 2 and "--bogus" in out.stderr
