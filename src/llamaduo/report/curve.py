"""The migration curve (the paper's Fig. 2 on real data): its record, verdict, Markdown table, PNG and HTML page.

`benchmarks/migration_curve.py` measures the student's judge-free metric at growing amounts of service-quality
training data and writes `curve.json` in the shape of `Curve`; `llamaduo report --curve curve.json` renders it with
`write_curve_report`, the same function the benchmark calls, so the page and the benchmark's files always agree.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, Field, ValidationError

from llamaduo.atomic import atomic_write_bytes, atomic_write_text
from llamaduo.errors import LlamaduoError

CURVE_FILE = "curve.json"
TASKS_TO_BEAT = 2
"""The claim: the largest size beats the base model with non-overlapping 95% CIs on at least this many tasks."""
_RERUN = "Rerun `benchmarks/migration_curve.py` (it resumes from its cache) to write it again."


class CurvePoint(BaseModel):
    """One task's metric at one training size (0: the base model), on the frozen test items."""

    size: int = Field(ge=0)
    """Training examples (service-quality answers) the student was fine-tuned on; 0 is the base model."""
    n: int = Field(ge=0)
    """Test items scored."""
    mean: float | None = None
    """Mean score, 0-100."""
    ci_low: float | None = None
    ci_high: float | None = None
    """Bootstrap 95% interval of the mean (none when every item scored the same: the bootstrap has no spread)."""
    cut_at_max_tokens: int = 0
    """Answers that hit the max_new_tokens limit instead of ending their turn."""
    failures: dict[str, int] = Field(default_factory=dict)
    """Coding: why programs failed their unit tests (exception name -> count)."""
    train_tokens: int | None = None
    train_tokens_per_s: float | None = None
    infer_tokens_per_s: float | None = None
    seconds: dict[str, float] = Field(default_factory=dict)
    """Wall seconds of each stage: train, infer, score."""

    def interval(self) -> tuple[float, float] | None:
        """The CI for comparisons; a degenerate bootstrap (every score equal over n >= 2 items) is the point itself."""
        if self.ci_low is not None and self.ci_high is not None:
            return self.ci_low, self.ci_high
        if self.mean is not None and self.n >= 2:
            return self.mean, self.mean
        return None


class CurveTask(BaseModel):
    name: str
    metric: str
    """How the task is scored, as the table heads it (e.g. `ROUGE-L F1`)."""
    train_data: str
    test_data: str
    license: str
    train_pool: int = Field(ge=0)
    """Training rows available after the length filter and the removal of rows sharing a prompt with the test items."""
    max_new_tokens: int = Field(ge=1)
    points: list[CurvePoint] = Field(default_factory=list)


class Curve(BaseModel):
    title: str = "Migration curve"
    created_at: str
    machine: str
    """Cores and CPU model (and GPU) of the machine that measured it."""
    student: str
    sizes: list[int]
    settings: dict[str, Any] = Field(default_factory=dict)
    """Training, decoding, filtering and seeds: what a reader needs to reproduce the numbers."""
    tasks: list[CurveTask]
    quick: bool = False
    """A smoke run (tiny sizes and test sets): its figures show the pipeline works, not the claim."""
    complete: bool = True
    """False while the benchmark is still running (a partial curve written after each stage)."""
    total_s: float | None = None


class TaskVerdict(BaseModel):
    task: str
    beats_base: bool | None
    """None: the base model or the largest size was not measured."""
    text: str


def task_verdict(task: CurveTask, largest: int) -> TaskVerdict:
    """Whether the student at the largest size beats the base model with non-overlapping 95% CIs."""
    by_size = {p.size: p for p in task.points}
    base, top = by_size.get(0), by_size.get(largest)
    if base is None or top is None or largest == 0:
        missing = "the base model" if base is None else f"size {largest}"
        return TaskVerdict(task=task.name, beats_base=None, text=f"{task.name}: not measured ({missing} has no result yet)")
    lo_hi_base, lo_hi_top = base.interval(), top.interval()
    span = f"{task.metric} {_value(base)} at 0 -> {_value(top)} at {largest}"
    if lo_hi_base is None or lo_hi_top is None:
        return TaskVerdict(task=task.name, beats_base=None, text=f"{task.name}: {span}; no interval (fewer than 2 items)")
    beats = lo_hi_top[0] > lo_hi_base[1]
    if beats:
        how = "beats the base model (95% CIs do not overlap)"
    elif lo_hi_top[1] < lo_hi_base[0]:
        how = "is WORSE than the base model (95% CIs do not overlap)"
    else:
        how = "no gain the CIs can show (they overlap)"
    return TaskVerdict(task=task.name, beats_base=beats, text=f"{task.name}: {span}: {how}")


def curve_verdict(curve: Curve) -> tuple[bool | None, list[TaskVerdict]]:
    """(claim holds, per-task verdicts); None while any task lacks its base or largest-size result."""
    largest = max(curve.sizes) if curve.sizes else 0
    verdicts = [task_verdict(t, largest) for t in curve.tasks]
    if any(v.beats_base is None for v in verdicts):
        return None, verdicts
    return sum(bool(v.beats_base) for v in verdicts) >= TASKS_TO_BEAT, verdicts


def _value(point: CurvePoint | None) -> str:
    if point is None or point.mean is None:
        return "–"
    if point.ci_low is None or point.ci_high is None:
        return f"{point.mean:.1f} (no spread)" if point.n >= 2 else f"{point.mean:.1f}"
    return f"{point.mean:.1f} [{point.ci_low:.1f}, {point.ci_high:.1f}]"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_rows(curve: Curve) -> list[list[str]]:
    """One row per training size: the size, then each task's mean [95% CI]."""
    rows = []
    for size in sorted(curve.sizes):
        label = "0 (base model)" if size == 0 else str(size)
        cells = [_value(next((p for p in t.points if p.size == size), None)) for t in curve.tasks]
        rows.append([label, *cells])
    return rows


def render_markdown(curve: Curve) -> str:
    head = ["train examples", *[f"{t.name}: {t.metric} [95% CI]" for t in curve.tasks]]
    lines = [f"# {curve.title}", "", f"Measured {curve.created_at} on {curve.machine}; student {curve.student}."]
    if curve.quick:
        lines += ["", "> A `--quick` smoke run: its sizes and test sets are too small to support the claim."]
    if not curve.complete:
        lines += ["", "> Partial: the benchmark is still running (or was stopped); rerun it to finish."]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table_rows(curve)]
    passed, verdicts = curve_verdict(curve)
    lines += ["", "Largest size against the base model:", ""] + [f"- {_cell(v.text)}" for v in verdicts]
    claim = f"the largest size beats the base model with non-overlapping 95% CIs on at least {TASKS_TO_BEAT} tasks"
    state = "not measured yet" if passed is None else ("holds" if passed else "does NOT hold")
    lines += ["", f"Claim ({claim}): **{state}**."]
    lines += ["", "| task | training data | test data | license | training pool | max new tokens |", "|---|---|---|---|---|---|"]
    lines += [f"| {t.name} | {_cell(t.train_data)} | {_cell(t.test_data)} | {_cell(t.license)} | {t.train_pool} | {t.max_new_tokens} |" for t in curve.tasks]
    lines += ["", "Settings: " + ", ".join(f"{k} = {_cell(json.dumps(v) if not isinstance(v, str) else v)}" for k, v in curve.settings.items())]
    lines += ["", "| task | size | train s | train tokens/s | infer s | infer tokens/s | score s | cut at max tokens | failures |", "|" + "---|" * 9]
    for t in curve.tasks:
        for p in sorted(t.points, key=lambda p: p.size):
            fails = ", ".join(f"{k} {v}" for k, v in sorted(p.failures.items(), key=lambda kv: -kv[1])) or "–"
            lines.append(f"| {t.name} | {p.size} | {_secs(p, 'train')} | {_num(p.train_tokens_per_s)} | {_secs(p, 'infer')} | "
                         f"{_num(p.infer_tokens_per_s)} | {_secs(p, 'score')} | {p.cut_at_max_tokens}/{p.n} | {_cell(fails)} |")
    if curve.total_s is not None:
        lines += ["", f"Total wall time of this invocation: {curve.total_s / 60:.1f} min (stages cached by earlier runs count in the table, not here)."]
    return "\n".join(lines) + "\n"


def _secs(point: CurvePoint, stage: str) -> str:
    value = point.seconds.get(stage)
    return "–" if value is None else f"{value:.0f}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def curve_png(curve: Curve) -> bytes:
    """One panel per task: the metric's mean with its 95% CI against the training size, the base model dashed."""
    from llamaduo.report.plots import _figure, png_bytes

    tasks = curve.tasks or []
    fig = _figure(max(3.4 * len(tasks), 4.0), 3.3)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.2, top=0.82, wspace=0.3)
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    sizes = sorted(curve.sizes)
    # Sizes grow geometrically (0, 128, 512, ...): evenly spaced positions keep every point legible.
    position = {s: i for i, s in enumerate(sizes)}
    for ax, task in zip(axes, tasks, strict=False):
        points = sorted((p for p in task.points if p.mean is not None and p.size in position), key=lambda p: p.size)
        xs = [position[p.size] for p in points]
        ys = [p.mean for p in points]
        lo = [p.mean - p.ci_low if p.ci_low is not None else 0 for p in points]
        hi = [p.ci_high - p.mean if p.ci_high is not None else 0 for p in points]
        if points:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, color="#4c72b0")
        base = next((p for p in points if p.size == 0), None)
        if base is not None:
            ax.axhline(base.mean, linestyle="--", linewidth=1, color="#888888", label="base model")
            ax.legend(fontsize="small", loc="best", frameon=False)
        # From 0, so a gap reads at its true size; at least 0-10, so an all-zero task is not a blown-up flat line.
        top = max([p.ci_high if p.ci_high is not None else p.mean for p in points], default=0.0)
        ax.set_ylim(0, min(100.0, max(10.0, top * 1.15)))
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("training examples")
        ax.set_ylabel(f"{task.metric} (0-100)")
        ax.set_title(task.name, fontsize="medium")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{curve.title}: {curve.student} (mean, 95% CI){' (quick run)' if curve.quick else ''}", fontsize="medium")
    return png_bytes(fig)


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ curve.title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.notice { background: #fff4ce; border: 1px solid #e0c060; padding: 0.6em 1em; }
.met { color: #1a7f37; font-weight: bold; } .missed { color: #b42318; font-weight: bold; }
img { max-width: 100%; }
</style>
</head>
<body>
<h1>{{ curve.title }}</h1>
<p>Measured {{ curve.created_at }} on {{ curve.machine }}; student {{ curve.student }}.</p>
{% if curve.quick %}<p class="notice">A --quick smoke run: its sizes and test sets are too small to support the claim.</p>{% endif %}
{% if not curve.complete %}<p class="notice">Partial: the benchmark is still running (or was stopped); rerun it to finish.</p>{% endif %}
<img id="curve" alt="metric against training examples, one panel per task" src="data:image/png;base64,{{ png }}">
<table id="table">
<tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}
</table>
<h2>Largest size against the base model</h2>
<ul>{% for v in verdicts %}<li class="{{ 'met' if v.beats_base else 'missed' if v.beats_base is not none else '' }}">{{ v.text }}</li>{% endfor %}</ul>
<p>Claim: {{ claim }}</p>
<h2>Data and settings</h2>
<table>
<tr><th>task</th><th>training data</th><th>test data</th><th>license</th><th>training pool</th><th>max new tokens</th></tr>
{% for t in curve.tasks %}<tr><td>{{ t.name }}</td><td>{{ t.train_data }}</td><td>{{ t.test_data }}</td><td>{{ t.license }}</td><td>{{ t.train_pool }}</td><td>{{ t.max_new_tokens }}</td></tr>
{% endfor %}
</table>
<table>{% for k, v in curve.settings.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
</body>
</html>
"""


def render_html(curve: Curve, png: bytes) -> str:
    # Autoescaped: task names and settings come from a file anyone could have edited.
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    passed, verdicts = curve_verdict(curve)
    claim = (f"the largest size beats the base model with non-overlapping 95% CIs on at least {TASKS_TO_BEAT} tasks: "
             + ("not measured yet" if passed is None else "holds" if passed else "does NOT hold"))
    head = ["train examples", *[f"{t.name}: {t.metric} [95% CI]" for t in curve.tasks]]
    return env.from_string(_HTML).render(curve=curve, png=base64.b64encode(png).decode("ascii"), head=head,
                                         rows=table_rows(curve), verdicts=verdicts, claim=claim)


def load_curve(path: str | os.PathLike[str]) -> Curve:
    """Read a curve.json (or the folder holding one); a missing or malformed file is one line with the fix."""
    path = Path(path)
    if path.is_dir():
        path = path / CURVE_FILE
    if not path.is_file():
        raise LlamaduoError(f"{path} not found",
                            "Pass the curve.json that benchmarks/migration_curve.py wrote (default benchmarks/out/migration_curve/curve.json), or run it first.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise LlamaduoError(f"{path} is not valid JSON{where}", _RERUN) from None
    try:
        return Curve.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise LlamaduoError(f"{path} is not a migration curve: {field}: {first['msg']}", _RERUN) from None


class CurveReport(BaseModel):
    markdown_path: str
    html_path: str
    png_path: str
    passed: bool | None
    verdicts: list[TaskVerdict]


def write_curve_report(curve: Curve | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> CurveReport:
    """Write curve.md, curve.png and curve.html (the PNG embedded) into `out_dir` (default: beside the curve.json)."""
    if not isinstance(curve, Curve):
        source = Path(curve)
        curve = load_curve(source)
        out = Path(out_dir) if out_dir else (source if source.is_dir() else source.parent)
    elif out_dir is None:
        raise ValueError("out_dir is required when a Curve object is passed")
    else:
        out = Path(out_dir)
    png = curve_png(curve)
    try:
        png_path = atomic_write_bytes(out / "curve.png", png)
        md_path = atomic_write_text(out / "curve.md", render_markdown(curve))
        html_path = atomic_write_text(out / "curve.html", render_html(curve, png))
    except OSError as exc:
        raise LlamaduoError(f"cannot write the curve report into {out}: {exc.strerror or exc}", "Pass --out with a writable folder.") from None
    passed, verdicts = curve_verdict(curve)
    return CurveReport(markdown_path=str(md_path), html_path=str(html_path), png_path=str(png_path), passed=passed, verdicts=verdicts)
