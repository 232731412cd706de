"""`llamaduo report`: the HTML and Markdown of a run, its escaping of model text, and the bad-input cases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markupsafe import escape

from llamaduo.report.api import build_report
from llamaduo.report.loader import load_run
from llamaduo.runs import RunFolder
from tests.report import browser
from tests.report.runfixture import XSS_IMG, XSS_SCRIPT, corrupt, make_run, project_config

# Fig. 2 and the loss curve, plus a histogram and a judge density for the baseline and the best (= latest) iteration.
EXPECTED_IMAGES = 6


@pytest.fixture(scope="module")
def demo_report(demo_project):
    root, config = demo_project
    result = build_report(config, "demo-run")
    return result, Path(result.html_path).read_text(encoding="utf-8"), Path(result.markdown_path).read_text(encoding="utf-8")


def test_html_holds_every_section_and_only_this_runs_spend(demo_report):
    result, html, _ = demo_report
    assert result.status == "done" and result.html_bytes == len(html.encode())
    for heading in ("Metrics per iteration", "Fig. 2", "Fig. 3", "Judge failures", "Judge-check agreement",
                    "Synthetic data gate report", "Training loss", "Spend and tokens", "Samples"):
        assert heading in html
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', html)) == EXPECTED_IMAGES
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    metrics = html.split('id="metrics"')[1].split("</table>")[0]
    assert metrics.count("<tr") == 5  # header + baseline + 3 iterations
    assert "iteration 3 (best)" in metrics and metrics.count(">met<") == 1 and metrics.count(">missed<") == 2
    spend = html.split('id="spend"')[1].split("</table>")[0]
    assert "1.2530" in spend and "99" not in spend  # another run's ledger rows stay out
    assert "gate decontamination" in html and "decontamination hits" in html and "after iteration 1 (used from iteration 2)" in html
    assert "spearman = 0.81" in html  # judge-check agreement of judge0
    assert html.split('id="samples"')[1].count("<tr>") == 6 + 1


def test_model_text_is_escaped(demo_report):
    _, html, markdown = demo_report
    assert "<script" not in html.lower()
    assert "onerror=" not in html.replace("onerror=&#34;", "").replace("onerror=&quot;", "")
    assert str(escape(XSS_SCRIPT)) in html and str(escape(XSS_IMG)) in html
    assert "<script" not in markdown and "<img" not in markdown


def test_markdown_summary(demo_report):
    _, _, markdown = demo_report
    assert "| iteration 3 (best) | 500 | 300 |" in markdown and "| baseline (iteration 0) |  |  |" in markdown
    assert "target met: precision.mean" in markdown
    assert "| total | | | | | | | 1.2530 |" in markdown
    # Each model's spend column is the ledger's sum for its iteration (synthesis is booked to the iteration it fed).
    rows = [line for line in markdown.splitlines() if re.match(r"\| (baseline|iteration \d)", line)]
    assert [line.rsplit("|", 2)[-2].strip() for line in rows] == ["0.0570", "0.2960", "0.9000", "0.0000"]


@pytest.mark.skipif(not browser.available(), reason="/usr/bin/chromium is absent (Debian package `chromium`)")
def test_report_renders_in_headless_chromium(demo_report, tmp_path):
    result, _, _ = demo_report
    probe = ("({scripts: document.scripts.length, onerror: document.querySelectorAll('[onerror]').length,"
             " text: document.body.innerText.includes('<script>alert(1)</script>'), title: document.title})")
    page = browser.load_page(Path(result.html_path).as_uri(), probe_js=probe)
    assert page.console_errors == []
    assert len(page.images) == EXPECTED_IMAGES
    assert all(img["complete"] and img["w"] > 0 and img["h"] > 0 for img in page.images), page.images
    assert page.probe == {"scripts": 0, "onerror": 0, "text": True, "title": "llamaduo run demo-run"}
    assert page.screenshot.startswith(b"\x89PNG") and len(page.screenshot) > 50_000
    (tmp_path / "report.png").write_bytes(page.screenshot)


@pytest.mark.skipif(not browser.available(), reason="/usr/bin/chromium is absent (Debian package `chromium`)")
def test_browser_check_catches_a_broken_image(tmp_path):
    # The check itself must be able to fail: a page with a broken image and a console error.
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img alt="x" src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>')
    result = browser.load_page(page.as_uri())
    assert result.images[0]["w"] == 0
    assert any("boom" in e for e in result.console_errors)


def test_running_run_renders_with_a_notice(tmp_path, cli):
    config = project_config(tmp_path)
    make_run(config, "live-run", iterations=1, status="running", n=5)
    code, out, err = cli("report", "live-run", "--out", "elsewhere", cwd=tmp_path)
    assert code == 0, err
    assert "still running" in err and "live-run (running)" in out
    assert (tmp_path / "elsewhere/report.md").is_file()
    html = (tmp_path / "elsewhere/report.html").read_text()
    assert "still running or was interrupted" in html and "iteration 1" in html


def test_run_without_results_yet(tmp_path, cli):
    config = project_config(tmp_path)
    RunFolder.create(tmp_path / "runs", config, run_id="fresh")
    code, out, err = cli("report", cwd=tmp_path)  # no argument: the newest run
    assert code == 0, err
    html = (tmp_path / "runs/fresh/report/report.html").read_text()
    assert "No evaluated model yet" in html and "No iteration has been evaluated yet" in html


def test_missing_run_is_one_line_exit_2(tmp_path, cli):
    project_config(tmp_path)
    code, out, err = cli("report", "nope", cwd=tmp_path)
    assert code == 2 and err.strip().count("\n") == 0
    assert "no run nope" in err and "llamaduo runs list" in err
    code, _, err = cli("report", cwd=tmp_path)
    assert code == 2 and "there are no runs" in err


@pytest.mark.parametrize("victim", ["eval/iter-0/report.json", "state.json", "manifest.json", "iter-1/train/checkpoint-40/trainer_state.json"])
def test_corrupt_metrics_file_is_one_line_exit_2(tmp_path, cli, victim):
    config = project_config(tmp_path)
    root = make_run(config, "broken", iterations=1, n=4)
    corrupt(root / victim)
    code, _, err = cli("report", "broken", cwd=tmp_path)
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "is corrupt" in err and victim.split("/")[-1] in err and "Traceback" not in err
    assert not (root / "report" / "report.html").exists()  # no partial report


def test_scores_of_the_wrong_shape_are_corrupt(tmp_path, cli):
    config = project_config(tmp_path)
    root = make_run(config, "badrows", iterations=1, n=4)
    (root / "eval/iter-1/scores.jsonl").write_text('{"example_id": "x", "task": "t", "sample": "many"}\n')
    code, _, err = cli("report", "badrows", cwd=tmp_path)
    assert code == 2 and "scores.jsonl is corrupt (sample" in err


def test_torn_event_lines_are_skipped_but_binary_logs_are_corrupt(tmp_path, cli):
    config = project_config(tmp_path)
    root = make_run(config, "logs", iterations=1, n=3)
    with open(root / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write('5\n[1, 2]\n{"ts": "x", "event": "evalu')  # odd rows and a torn last line, as a crash leaves
    run = load_run(tmp_path / "runs", "logs")
    assert run.events[-1]["event"] == "evaluated" and len(run.iterations) == 1
    (root / "events.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli("report", "logs", cwd=tmp_path)
    assert code == 2 and "events.jsonl is corrupt (not UTF-8 text)" in err
