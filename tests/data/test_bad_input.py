"""Bad input at the CLI: one line naming the problem and the fix, exit code 2, and no partial dataset version."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llamaduo.cli.app import app, main
from tests.data.factory import dolly_rows, write_jsonl

@dataclass
class Result:
    returncode: int
    stderr: str


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """Through the real entry point (`main()` is the error boundary), in-process, in the project folder."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["llamaduo", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        return Result(code, capsys.readouterr().err)

    return run


def _no_version(tmp_path: Path) -> bool:
    return not (tmp_path / "data" / "index.json").exists()


def _bad_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1"))
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "cols.csv").write_text("name,age\nann,3\n", encoding="utf-8")
    (tmp_path / "notjson.json").write_text("prompt,response\na,b\n", encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", dolly_rows(2))
    return {
        "missing": (["nope.jsonl"], "no such file"),
        "non-utf8": (["latin1.jsonl"], "not UTF-8"),
        "empty": (["empty.jsonl"], "is empty"),
        "csv columns": (["cols.csv"], "cannot tell the record layout from the fields (age, name)"),
        "not json": (["notjson.json"], "not valid JSON"),
        "layout mismatch": (["d.jsonl", "--format", "sharegpt"], "do not match the sharegpt format"),
    }


def test_whole_file_problems_exit_2_with_one_line(tmp_path, run_cli):
    for name, (args, expected) in _bad_files(tmp_path).items():
        result = run_cli("data", "ingest", *args, "--task", "t")
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (name, result.stderr)
        assert "Traceback" not in result.stderr and _no_version(tmp_path), name


def test_invalid_row_stops_by_default_and_is_skipped_on_request(tmp_path, run_cli):
    path = tmp_path / "rows.jsonl"
    good = [json.dumps(r) for r in dolly_rows(3)]
    path.write_text("\n".join([good[0], "{broken", good[1], json.dumps({"instruction": "no answer"}), good[2]]) + "\n", encoding="utf-8")
    runner = CliRunner()
    stopped = run_cli("data", "ingest", "rows.jsonl", "--task", "t")
    assert stopped.returncode == 2 and "rows.jsonl:2: invalid JSON" in stopped.stderr and "--skip-invalid" in stopped.stderr
    assert _no_version(tmp_path)
    result = runner.invoke(app, ["data", "ingest", str(path), "--task", "t", "--skip-invalid", "--json", "-c", str(_config(tmp_path))])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kept"] == 3 and report["invalid_count"] == 2
    assert [i["location"].rsplit(":", 1)[-1] for i in report["invalid"]] == ["2", "4"]
    assert "missing field `response`" in report["invalid"][1]["reason"]


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    from llamaduo.errors import LlamaduoError
    from tests.data.factory import project_config

    from llamaduo.data import ingest

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(LlamaduoError, match="unreachable"):
        ingest(project_config(tmp_path), ["someone/some-dataset"], task="t")


def test_ingest_without_task_or_sources(tmp_path, run_cli):
    write_jsonl(tmp_path / "d.jsonl", dolly_rows(1))
    assert "--task" in run_cli("data", "ingest", "d.jsonl").stderr
    assert "data.sources" in run_cli("data", "ingest").stderr


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "llamaduo.yaml"
    path.write_text(f"project:\n  workdir: {tmp_path}\n", encoding="utf-8")
    return path
