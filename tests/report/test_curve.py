"""The migration curve's record, verdict and rendering (llamaduo.report.curve), and `llamaduo report --curve`.

The fixture (curve_fixture.json) is hand-written, not a measurement: summarization and closed QA gain with
non-overlapping CIs, coding does not.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from llamaduo.errors import LlamaduoError
from llamaduo.report.curve import Curve, CurvePoint, curve_png, curve_verdict, load_curve, render_html, render_markdown, write_curve_report
from tests.report import browser

FIXTURE = Path(__file__).with_name("curve_fixture.json")


@pytest.fixture
def curve() -> Curve:
    return load_curve(FIXTURE)


@pytest.fixture
def curve_dir(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE, tmp_path / "curve.json")
    return tmp_path


def _point(curve: Curve, task: str, size: int) -> CurvePoint:
    return next(p for t in curve.tasks if t.name == task for p in t.points if p.size == size)


def test_the_claim_holds_when_two_tasks_gain_with_separate_intervals(curve):
    passed, verdicts = curve_verdict(curve)
    assert passed is True
    assert [(v.task, v.beats_base) for v in verdicts] == [("summarization", True), ("closed_qa", True), ("coding", False)]
    assert "no gain the CIs can show" in verdicts[2].text and "6.0 [2.0, 11.0] at 0 -> 8.0 [3.0, 14.0] at 512" in verdicts[2].text


def test_touching_intervals_do_not_count_and_one_task_is_not_enough(curve):
    # closed QA's largest size now starts exactly where the base model's interval ends: they overlap.
    _point(curve, "closed_qa", 512).ci_low = 29.0
    passed, verdicts = curve_verdict(curve)
    assert verdicts[1].beats_base is False and passed is False


def test_a_drop_is_called_worse(curve):
    _point(curve, "summarization", 512).mean, _point(curve, "summarization", 512).ci_low, _point(curve, "summarization", 512).ci_high = 10.0, 8.0, 12.0
    assert "WORSE than the base model" in curve_verdict(curve)[1][0].text


def test_an_all_zero_base_is_a_point_not_a_missing_interval(curve):
    base, top = _point(curve, "coding", 0), _point(curve, "coding", 512)
    base.mean, base.ci_low, base.ci_high = 0.0, None, None  # every MBPP task failed: the bootstrap has no spread
    assert curve_verdict(curve)[1][2].beats_base is True  # 8.0 [3.0, 14.0] lies above 0
    top.mean, top.ci_low, top.ci_high = 0.0, None, None
    verdict = curve_verdict(curve)[1][2]
    assert verdict.beats_base is False and "0.0 (no spread)" in verdict.text


def test_a_missing_stage_leaves_the_claim_unmeasured(curve):
    curve.tasks[2].points = [p for p in curve.tasks[2].points if p.size != 512]
    passed, verdicts = curve_verdict(curve)
    assert passed is None and verdicts[2].beats_base is None and "size 512 has no result" in verdicts[2].text
    assert "not measured yet" in render_markdown(curve)


def test_markdown_table_has_a_row_per_size_and_a_column_per_task(curve):
    text = render_markdown(curve)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| train examples"))
    assert header.count("[95% CI]") == 3 and "closed_qa: token F1" in header
    rows = [line for line in lines if line.startswith(("| 0 (base model)", "| 128 |", "| 512 |"))]
    assert rows[0] == "| 0 (base model) | 20.4 [18.0, 22.9] | 25.0 [21.0, 29.0] | 6.0 [2.0, 11.0] |"
    assert rows[2] == "| 512 | 31.6 [29.0, 34.1] | 40.0 [35.5, 44.5] | 8.0 [3.0, 14.0] |"
    assert "**holds**" in text and "2 cores (2 usable), AMD EPYC" in text and "CC BY-SA 3.0" in text
    assert "| coding | 512 |" in text and "AssertionError 70, SyntaxError 22" in text


def test_png_has_one_panel_per_task(curve):
    png = curve_png(curve)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > image.height
    curve.tasks = curve.tasks[:1]
    assert Image.open(io.BytesIO(curve_png(curve))).width < image.width  # the figure widens with the tasks


def test_html_embeds_the_plot_and_escapes_file_text(curve):
    curve.tasks[0].train_data = "<script>alert(1)</script>"
    html = render_html(curve, curve_png(curve))
    assert 'src="data:image/png;base64,iVBORw0KGgo' in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<tr>") >= 4 + 3  # header and three sizes; the data table


def test_write_curve_report_defaults_beside_the_json(curve_dir):
    result = write_curve_report(curve_dir / "curve.json")
    assert {Path(p).name for p in (result.markdown_path, result.html_path, result.png_path)} == {"curve.md", "curve.html", "curve.png"}
    assert all(Path(p).parent == curve_dir for p in (result.markdown_path, result.html_path, result.png_path))
    assert result.passed is True
    assert write_curve_report(curve_dir).html_path == result.html_path  # the folder works too


@pytest.mark.parametrize(("content", "message"), [
    ('{"tasks": [', "is not valid JSON (line 1)"),
    ('{"created_at": "x", "machine": "m", "student": "s", "sizes": [0], "tasks": [{"name": "t"}]}', "is not a migration curve: tasks.0.metric"),
    ("[1, 2]", "is not a migration curve"),
])
def test_malformed_curve_is_one_error_with_the_fix(tmp_path, content, message):
    path = tmp_path / "curve.json"
    path.write_text(content)
    with pytest.raises(LlamaduoError) as err:
        load_curve(path)
    assert message in err.value.message and "Rerun `benchmarks/migration_curve.py`" in err.value.message


def test_cli_renders_a_curve(curve_dir, tmp_path, cli):
    out = tmp_path / "elsewhere"
    code, stdout, err = cli("report", "--curve", str(curve_dir / "curve.json"), "--out", str(out))
    assert code == 0, err
    assert f"migration curve: {out / 'curve.html'}" in stdout
    assert "coding: pass@1 6.0 [2.0, 11.0] at 0 -> 8.0 [3.0, 14.0] at 512: no gain" in stdout and stdout.rstrip().endswith("holds")
    assert sorted(p.name for p in out.iterdir()) == ["curve.html", "curve.md", "curve.png"]
    code, stdout, _ = cli("report", "--curve", str(curve_dir), "--json")
    assert code == 0 and json.loads(stdout)["passed"] is True and (curve_dir / "curve.html").is_file()


def test_cli_bad_curve_paths_are_one_line_exit_2(tmp_path, cli):
    code, _, err = cli("report", "--curve", str(tmp_path / "missing.json"))
    assert code == 2 and err.strip().count("\n") == 0 and "missing.json not found" in err and "migration_curve.py" in err
    (tmp_path / "curve.json").write_text("not json")
    code, _, err = cli("report", "--curve", str(tmp_path / "curve.json"))
    assert code == 2 and err.strip().count("\n") == 0 and "is not valid JSON" in err and "Traceback" not in err
    code, _, err = cli("report", "some-run", "--curve", str(FIXTURE))
    assert code == 2 and "not both" in err


@pytest.mark.skipif(not browser.available(), reason="/usr/bin/chromium is absent (Debian package `chromium`)")
def test_curve_page_renders_in_headless_chromium(curve_dir):
    result = write_curve_report(curve_dir / "curve.json")
    page = browser.load_page(Path(result.html_path).as_uri())
    assert page.console_errors == []
    assert len(page.images) == 1 and page.images[0]["complete"] and page.images[0]["w"] > 0
