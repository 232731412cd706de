"""The report's figures as base64 PNGs (matplotlib's Agg canvas, no pyplot state), so the HTML needs no other file.

Fig. 2 (metric against synthetic data), Fig. 3 (score histograms, precision-vs-similarity density per judge),
the training loss and Fig. 4 (cumulative cost of service against local hosting).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from llamaduo.errors import MissingExtra
from llamaduo.report.costs import Projection
from llamaduo.report.loader import RunData, StageData

DPI = 90


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra("matplotlib", "report") from None
    # A fixed layout: constrained/tight layout cost more CPU than drawing the plots themselves.
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.16, top=0.88, wspace=0.3)
    FigureCanvasAgg(fig)
    return fig


def _integer_ticks(axis: Any) -> None:
    """Ticks at whole numbers only, for axes that count things (answers, steps, pairs, months): never 0.5 answers."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def png_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _b64(fig: Any) -> str:
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def metric_series(run: RunData) -> dict[str, list[tuple[float, float, float | None, float | None]]]:
    """metric -> [(accumulated synthetic pairs, mean, ci_low, ci_high)] over iterations, from the loop state or the eval reports."""
    series: dict[str, list[tuple[float, float, float | None, float | None]]] = {}
    for it in run.iterations:
        x = float(it.record.synthetic_total) if it.record else 0.0
        points: dict[str, tuple[float, float | None, float | None]] = {}
        if it.record:
            for key, s in it.record.metrics.items():
                if key.endswith(".mean") and s.mean is not None:
                    points[key.removesuffix(".mean")] = (s.mean, s.ci_low, s.ci_high)
        if not points and it.eval:
            for name, view in it.eval.metrics.items():
                if view.per_sample.mean is not None:
                    lo, hi = view.per_sample.ci95.get("mean", (None, None))
                    points[name] = (view.per_sample.mean, lo, hi)
        for name, (mean, lo, hi) in points.items():
            series.setdefault(name, []).append((x, mean, lo, hi))
    return series


def baseline_means(run: RunData) -> dict[str, float]:
    if run.state and run.state.baseline:
        return {k.removesuffix(".mean"): s.mean for k, s in run.state.baseline.items() if k.endswith(".mean") and s.mean is not None}
    if run.baseline and run.baseline.eval:
        return {n: v.per_sample.mean for n, v in run.baseline.eval.metrics.items() if v.per_sample.mean is not None}
    return {}


def metric_vs_synthetic(run: RunData) -> str | None:
    """Fig. 2 as a base64 PNG, or None before any iteration was evaluated."""
    fig = metric_figure(run)
    return None if fig is None else _b64(fig)


def metric_figure(run: RunData) -> Any:
    """Fig. 2: each metric's mean (with its 95% CI) against the synthetic pairs accumulated so far."""
    series = metric_series(run)
    if not series:
        return None
    fig = _figure(7.6, 3.6)
    fig.subplots_adjust(right=0.72)  # room for the legend beside the axes, where it hides no point
    ax = fig.add_subplot()
    base = baseline_means(run)
    distinct = sorted({p[0] for points in series.values() for p in points})
    for i, (name, points) in enumerate(sorted(series.items())):
        # With one x every metric sits on one vertical line; spread them a little so each CI stays legible.
        dodge = (i - (len(series) - 1) / 2) * 0.6 / max(1, len(series) - 1) if len(distinct) == 1 else 0.0
        xs = [p[0] + dodge for p in points]
        ys = [p[1] for p in points]
        lo = [p[1] - p[2] if p[2] is not None else 0 for p in points]
        hi = [p[3] - p[1] if p[3] is not None else 0 for p in points]
        line = ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        if name in base:
            ax.axhline(base[name], linestyle="--", linewidth=1, color=line.lines[0].get_color(), label=f"{name} (base model)")
    if len(distinct) == 1:
        # One x (a single iteration, or no data added yet): an autoscaled axis would span -0.04..0.04 around it.
        ax.set_xticks(distinct)
        ax.set_xlim(distinct[0] - 1, distinct[0] + 1)
        ax.set_xlabel("accumulated synthetic pairs (a single value so far)")
    else:
        _integer_ticks(ax.xaxis)
        ax.set_xlabel("accumulated synthetic pairs")
    ax.set_ylabel("score (0-100)")
    ax.set_title("Metric vs synthetic data (mean, 95% CI)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return fig


def score_histograms(stage: StageData) -> str | None:
    fig = histogram_figure(stage)
    return None if fig is None else _b64(fig)


def histogram_figure(stage: StageData) -> Any:
    """Fig. 3 (left): the distribution of every metric's per-answer scores."""
    metrics = sorted({m for row in stage.scores for m, v in row.scores.items() if v is not None})
    if not metrics:
        return None
    fig = _figure(min(3.0 * len(metrics), 12), 2.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics, strict=True):
        values = [row.scores[name] for row in stage.scores if row.scores.get(name) is not None]
        ax.hist(values, bins=10, range=(0, 100), color="#4c72b0", edgecolor="white")
        ax.set_title(f"{name} (n={len(values)})", fontsize="small")
        ax.set_xlabel("score")
        _integer_ticks(ax.yaxis)
    axes[0].set_ylabel("answers")
    return fig


def judge_density(stage: StageData) -> str | None:
    fig = density_figure(stage)
    return None if fig is None else _b64(fig)


def density_figure(stage: StageData) -> Any:
    """Fig. 3 (right): a 2-D histogram of precision against similarity for each judge."""
    labels = {f"judge{j.index}": j.label for j in stage.eval.judges} if stage.eval else {}
    judges = sorted({label for row in stage.scores for label, s in row.per_judge.items() if "similarity" in s and "precision" in s})
    if not judges:
        return None
    import numpy
    from matplotlib.ticker import MaxNLocator

    fig = _figure(min(3.6 * len(judges), 12), 3.2)
    fig.subplots_adjust(wspace=0.5)  # each panel's colorbar and its label sit between the panels
    axes = fig.subplots(1, len(judges), squeeze=False)[0]
    for ax, judge in zip(axes, judges, strict=True):
        pairs = [(s["similarity"], s["precision"]) for row in stage.scores if (s := row.per_judge.get(judge)) and "similarity" in s and "precision" in s]
        # cmin=1 leaves empty cells blank, so a handful of answers reads as points rather than as a dark square;
        # the scale starts at 0 so that a single count still has a range to sit in.
        counts, *_ = numpy.histogram2d([p[0] for p in pairs], [p[1] for p in pairs], bins=10, range=[[0, 100], [0, 100]])
        *_, image = ax.hist2d([p[0] for p in pairs], [p[1] for p in pairs], bins=10, range=[[0, 100], [0, 100]], cmap="viridis",
                              cmin=1, vmin=0, vmax=max(1, int(counts.max())))
        fig.colorbar(image, ax=ax, shrink=0.8, label="answers", ticks=MaxNLocator(nbins=5, integer=True))
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_title(labels.get(judge, judge), fontsize="small")
        ax.set_xlabel("similarity")
    axes[0].set_ylabel("precision")
    return fig


def loss_curves(run: RunData) -> str | None:
    fig = loss_figure(run)
    return None if fig is None else _b64(fig)


def loss_figure(run: RunData) -> Any:
    """Training loss against step, one line per iteration."""
    stages = [it for it in run.iterations if it.loss]
    if not stages:
        return None
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    for it in stages:
        # A short log would draw as a bare line, and a single logged step as nothing at all: mark the points.
        marker = "o" if len(it.loss) < 20 else None
        ax.plot([p[0] for p in it.loss], [p[1] for p in it.loss], marker=marker, markersize=4, label=it.label)
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def projection_figure(projection: Projection) -> Any:
    """Fig. 4: cumulative cost of staying on the service LLM against moving to local hosting."""
    fig = _figure(6.4, 3.6)
    fig.subplots_adjust(left=0.14)
    ax = fig.add_subplot()
    # Month 0 shows the one-off migration cost that local hosting starts with.
    months = list(range(0, projection.months + 1))
    ax.plot(months, [0.0, *projection.service_cumulative], marker="o", label=f"service LLM ({projection.service_model})")
    ax.plot(months, [projection.local.one_off_usd, *projection.local_cumulative], marker="s", label=f"local hosting ({projection.gpus} GPU)")
    if projection.break_even_exact is not None and projection.break_even_exact <= projection.months:
        x = projection.break_even_exact
        y = projection.service_monthly_usd * x
        ax.axvline(x, linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"break-even {x:.1f} months", (x, y), textcoords="offset points", xytext=(6, 10), fontsize="small")
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("month")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title("Service LLM vs local hosting")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def projection_plot(projection: Projection) -> str:
    return _b64(projection_figure(projection))
