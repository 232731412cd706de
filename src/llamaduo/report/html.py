"""The self-contained HTML report: one Jinja template, autoescaped, because every answer and reason in it is model text."""

from __future__ import annotations

from typing import Any

import jinja2
import markupsafe

from llamaduo import __version__
from llamaduo.report import plots, view
from llamaduo.report.loader import RunData, StageData
from llamaduo.report.spend import SpendRow, total_usd, unpriced, usd


def _environment() -> jinja2.Environment:
    # autoescape=True for every template (not select_autoescape by extension): the report must never emit model text raw.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("llamaduo.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )


def _fig3_stages(run: RunData, focus: StageData | None) -> list[StageData]:
    """Distributions of the base model, the best iteration and the latest one: the comparisons a reader makes."""
    chosen = [s for s in (run.baseline, focus, run.iterations[-1] if run.iterations else None) if s is not None and s.scores]
    return list({id(s): s for s in chosen}.values())


def render_html(run: RunData, spend: list[SpendRow], samples: int, live_html: str = "") -> str:
    """`live_html`: the gateway's live section, already escaped (llamaduo.deploy.livemetrics.html)."""
    focus = view.focus_stage(run)
    evaluated = ([run.baseline] if run.baseline else []) + run.iterations
    context: dict[str, Any] = {
        "run": run,
        "version": __version__,
        "table": view.metrics_table(run, spend),
        "figures": {"fig2": plots.metric_vs_synthetic(run), "loss": plots.loss_curves(run)},
        "stages": [{"label": s.label, "hist": plots.score_histograms(s), "density": plots.judge_density(s)} for s in _fig3_stages(run, focus)],
        "failures": [f for s in evaluated if (f := view.failures(s))],
        "trust": view.trust_rows(focus) if focus else [],
        "gates": [{"label": view.gate_label(s), "rows": g} for s in evaluated if (g := view.gate_report(s))],
        "spend": view.spend_rows(spend),
        "spend_total": usd(total_usd(spend), unpriced(spend)),
        "samples": view.samples(focus, samples) if focus else [],
        "sample_stage": focus.label if focus else "",
        "live_html": markupsafe.Markup(live_html),
    }
    return _environment().get_template("report.html.j2").render(**context)
