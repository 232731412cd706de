"""The CLI as a user meets it: --help everywhere, --version, init, config show, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from llamaduo import __version__
from llamaduo.cli.app import Commands, app
from llamaduo.cli.lazy import load_command, subcommands

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
        for name, sub in subcommands(cmd).items():
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


@pytest.mark.parametrize("where", [".", "new-proj", "nested/deeper/proj", "existing"])
def test_init_folder_gets_llamaduo_yaml(tmp_path, where):
    (tmp_path / "existing").mkdir()
    out = run_cli("init", where, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    target = (tmp_path / where / "llamaduo.yaml").resolve()
    assert target.is_file() and out.stdout.startswith(f"wrote {Path(where) / 'llamaduo.yaml'}")
    assert ("cd " in out.stdout) == (where != ".")
    # The project is named after its folder, as cargo and uv do.
    shown = run_cli("config", "show", "--json", cwd=target.parent)
    assert shown.returncode == 0 and f'"name": "{target.parent.name}"' in shown.stdout
    again = run_cli("init", where, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert run_cli("init", where, "--force", "--name", "other", cwd=tmp_path).returncode == 0
    assert "name: other" in target.read_text()


@pytest.mark.parametrize("name", ["custom.yaml", "sub/dir/conf.YML"])
def test_init_yaml_path_writes_that_file(tmp_path, name):
    out = run_cli("init", name, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / name).is_file() and not (tmp_path / name / "llamaduo.yaml").exists()
    assert f"--config {Path(name).name}" in out.stdout
    shown = run_cli("config", "show", "--config", name, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr


def test_init_on_a_plain_file_is_one_line_error(tmp_path):
    (tmp_path / "notes").write_text("mine")
    out = run_cli("init", "notes", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "notes is a file, not a folder" in out.stderr and "ending in .yaml" in out.stderr
    assert (tmp_path / "notes").read_text() == "mine"


def test_init_writes_with_the_umask_mode(tmp_path):
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        folder = tmp_path / f"u{umask:03o}"
        out = subprocess.run(
            [sys.executable, "-c", f"import os, sys; os.umask({umask}); sys.argv = ['llamaduo', 'init', {str(folder)!r}];"
             " from llamaduo.cli import main; main()"],
            capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert (folder / "llamaduo.yaml").stat().st_mode & 0o777 == mode


def test_root_help_lists_every_verb_with_its_own_summary():
    # The root --help shows summaries kept in the registry (so it needs no verb module); they must match the verbs.
    for name, spec in Commands.lazy_commands.items():
        command = load_command(name, spec)
        assert command.help is not None
        assert spec.summary == " ".join(command.help.split("\n\n")[0].split()), name
    out = run_cli("--help", cwd=REPO)
    for name in Commands.lazy_commands:
        assert f" {name} " in out.stdout


HEAVY = ("torch", "transformers", "pandas", "datasets", "numpy", "pyarrow", "matplotlib", "openai", "anthropic", "httpx", "fastapi")
LOADED = "import sys; print('loaded:', *(m for m in {heavy!r} if m in sys.modules))"


def test_import_llamaduo_cli_pulls_in_no_heavy_package():
    out = subprocess.run([sys.executable, "-c", "import llamaduo.cli; " + LOADED.format(heavy=(*HEAVY, "pydantic", "rich"))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["loaded:"]


@pytest.mark.parametrize("args", [["--help"], ["status"], ["data", "--help"]], ids=" ".join)
def test_quick_verbs_load_no_heavy_package(tmp_path, args):
    # `llamaduo --help` and `status` should answer at once: the stages' heavy packages load with the verbs that use them.
    from llamaduo.loop.state import IterationRecord, LoopState

    assert run_cli("init", cwd=tmp_path).returncode == 0
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    LoopState(run_id="r1", config_hash="x", status="done", iterations=[IterationRecord(iteration=0)]).save(tmp_path / "runs" / "r1")
    code = f"import sys; sys.argv = ['llamaduo', *{args!r}]\nfrom llamaduo.cli import main\ntry:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    out = subprocess.run([sys.executable, "-c", code + LOADED.format(heavy=HEAVY)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 0, out.stderr
    printed, loaded = out.stdout.rsplit("loaded:", 1)
    assert ("Usage" in printed) if "--help" in args else ("r1" in printed)  # the verb did its work
    assert loaded.split() == []


def test_heavy_import_check_can_fail():
    out = subprocess.run([sys.executable, "-c", "import llamaduo.cli, pyarrow; " + LOADED.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120)
    assert {"pyarrow", "numpy"} <= set(out.stdout.split())


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


def test_misspelt_verb_gets_a_suggestion(tmp_path):
    # Verbs load lazily, so typer alone would only suggest among those already loaded (none).
    out = run_cli("stauts", cwd=tmp_path)
    assert out.returncode == 2 and "No such command 'stauts'. Did you mean 'status'?" in out.stderr


def test_wrong_flag_exits_2(tmp_path):
    out = run_cli("config", "show", "--bogus", cwd=tmp_path)
    assert out.returncode == 2 and "--bogus" in out.stderr
