"""The report's figures read well at any run size: one iteration, two answers, many iterations.

Checked on the figures' axes (whole-number ticks on counts, a sensible axis around a single x), on the decoded
PNGs (the metrics of a one-iteration run are drawn apart), and in headless Chromium (every image decodes).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from llamaduo.report import plots
from llamaduo.report.api import build_report
from llamaduo.report.costs import PRESETS, project
from llamaduo.report.loader import load_run
from tests.report import browser
from tests.report.runfixture import make_run, project_config

# matplotlib's first three cycle colours: the metrics precision, rouge_l and similarity, in that order.
COLOURS = {"precision": (0x1F, 0x77, 0xB4), "rouge_l": (0xFF, 0x7F, 0x0E), "similarity": (0x2C, 0xA0, 0x2C)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One iteration over two answers: the smallest run a user can make."""
    root = tmp_path_factory.mktemp("tiny")
    config = project_config(root)
    make_run(config, "tiny", iterations=1, n=2)
    return config, load_run(config.path(config.project.runs_dir), "tiny")


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    config = project_config(root)
    make_run(config, "long", iterations=4, n=30)
    return load_run(config.path(config.project.runs_dir), "long")


def visible_ticks(ax, which: str) -> list[float]:
    low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
    ticks = ax.get_yticks() if which == "y" else ax.get_xticks()
    return [t for t in ticks if low - 1e-9 <= t <= high + 1e-9]


def assert_whole_numbers(ticks: list[float]) -> None:
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_single_point_gets_its_own_axis_not_minus_0_04(tiny_run):
    _, run = tiny_run
    fig = plots.metric_figure(run)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0.0] and ax.get_xlim() == (-1.0, 1.0)
    assert "single value" in ax.get_xlabel()
    # The three metrics share x = 0; each is drawn at its own offset so their CIs do not overlap.
    offsets = sorted({round(float(line.get_xdata()[0]), 3) for line in ax.lines if line.get_marker() == "o"})
    assert len(offsets) == 3 and offsets[0] < 0 < offsets[-1]


def test_single_point_markers_stand_apart_in_the_png(tiny_run, tmp_path):
    _, run = tiny_run
    png = base64.b64decode(plots.metric_vs_synthetic(run))
    (tmp_path / "fig2.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, _ = image.size
    centres = {}
    pixels = image.load()
    for name, colour in COLOURS.items():
        # The marker and its CI bar fill many pixels of a few columns; the base model's dashed line, one or two
        # of every column. The legend sits right of 72% of the width.
        counts = {x: sum(pixels[x, y] == colour for y in range(image.size[1])) for x in range(int(width * 0.72))}
        columns = [x for x, n in counts.items() if n >= 8]
        assert columns, f"no {name} marker drawn"
        centres[name] = sum(columns) / len(columns)
    xs = sorted(centres.values())
    assert xs[1] - xs[0] > 40 and xs[2] - xs[1] > 40, centres  # apart by more than a marker's width
    axes_left, axes_right = width * 0.09, width * 0.72
    middle = (axes_left + axes_right) / 2
    assert all(abs(x - middle) < (axes_right - axes_left) / 4 for x in xs), centres  # around the one tick, not at an edge


def test_count_axes_have_whole_number_ticks_with_two_answers(tiny_run):
    _, run = tiny_run
    stage = run.iterations[-1]
    hist = plots.histogram_figure(stage)
    for ax in hist.axes:
        assert_whole_numbers(visible_ticks(ax, "y"))
        assert max(p.get_height() for p in ax.patches) == 1  # two answers: no bin holds more than one
    density = plots.density_figure(stage)
    colourbars = [ax for ax in density.axes if ax.get_label() == "<colorbar>"]
    assert len(colourbars) == 2
    for bar in colourbars:
        assert_whole_numbers(visible_ticks(bar, "y"))
    steps = plots.loss_figure(run).axes[0]
    assert_whole_numbers(visible_ticks(steps, "x"))


def test_many_iterations_keep_a_numeric_axis_and_whole_ticks(long_run):
    fig = plots.metric_figure(long_run)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "accumulated synthetic pairs"
    assert_whole_numbers(visible_ticks(ax, "x"))
    low, high = ax.get_xlim()
    assert low <= 0 and high >= 700  # 0, 100, 300, 700 synthetic pairs
    hist = plots.histogram_figure(long_run.iterations[-1])
    for axis in hist.axes:
        assert_whole_numbers(visible_ticks(axis, "y"))


def test_projection_months_are_whole(tmp_path):
    light = PRESETS["light"]
    fig = plots.projection_figure(project(light.service_model, light.workload, light.local, months=2))
    assert_whole_numbers(visible_ticks(fig.axes[0], "x"))
    (tmp_path / "projection.png").write_bytes(plots.png_bytes(fig))


@pytest.mark.skipif(not browser.available(), reason="/usr/bin/chromium is absent (Debian package `chromium`)")
def test_tiny_run_report_figures_render_in_chromium(tiny_run, tmp_path):
    config, run = tiny_run
    result = build_report(config, "tiny")
    page = browser.load_page(Path(result.html_path).as_uri())
    assert page.console_errors == []
    expected = {
        "metric vs synthetic data": Image.open(io.BytesIO(base64.b64decode(plots.metric_vs_synthetic(run)))).size,
        "training loss": Image.open(io.BytesIO(base64.b64decode(plots.loss_curves(run)))).size,
    }
    seen = {img["alt"]: (img["w"], img["h"]) for img in page.images if img["complete"]}
    assert len(seen) == len(page.images) >= 4  # Fig. 2, loss, and a histogram and density per stage
    for alt, size in expected.items():
        assert seen[alt] == size
    (tmp_path / "tiny-report.png").write_bytes(page.screenshot)
