"""Tables of a loop run for the terminal: the per-iteration table, the judge-free gains, the final summary."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary


NOT_MEASURED = "not measured"


def _fmt(m: MetricSummary | None, scale: float = 1.0, *, void: bool = False) -> str:
    if m is None or m.mean is None:
        return NOT_MEASURED if void and m is not None else "-"
    text = f"{m.mean * scale:.1f}"
    # A [v, v] interval (state written before unavailable CIs were recorded as none) claims what one sample cannot.
    if m.ci_low is not None and m.ci_high is not None and m.ci_low != m.ci_high:
        text += f" [{m.ci_low * scale:.1f}, {m.ci_high * scale:.1f}]"
    return text


def usd(value: float, unpriced: int = 0) -> str:
    """Dollars as every loop view prints them, marking paid calls whose model has no price (left out of the sum)."""
    return f"{value:.4f}" + (f" + {unpriced} unpriced" if unpriced else "")


def metric_columns(records: list[IterationRecord]) -> list[str]:
    """Judged means and coverages first, then judge-free means, in a stable order."""
    judged = sorted({k for r in records for k in r.metrics}, key=lambda k: (not k.endswith(".mean"), k))
    free = sorted({k for r in records for k in r.judge_free if k.endswith(".mean")})
    return judged + free


def iteration_table(state: LoopState, spend: dict[int | None, tuple[float, int]]) -> Table:
    """One row per metric and one column per iteration: a few iterations with CIs fit an 80-column terminal.

    `spend` is the ledger's (dollars, unpriced requests) per iteration (`loop.outcome.iteration_spend`).
    """
    columns = metric_columns(state.iterations)
    table = Table(title=f"run {state.run_id}: iterations (95% CI in brackets; coverage in %; * best; service $ from the ledger)")
    table.add_column("", justify="left", no_wrap=True)
    for r in state.iterations:
        label = "base" if r.iteration == 0 else f"iter {r.iteration}"
        table.add_column(label + (" *" if r.iteration == state.best_iteration else ""), justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("train rows", [str(r.train_size) for r in state.iterations]),
        ("synthetic added", [str(r.synthetic_added) for r in state.iterations]),
    ]
    for c in columns:
        scale = 100.0 if ".coverage@" in c else 1.0
        rows.append((c, [_fmt(r.metrics.get(c) or r.judge_free.get(c), scale, void=r.not_measured is not None) for r in state.iterations]))
    rows += [
        ("target", [NOT_MEASURED if r.not_measured else "met" if r.target_met else "missed" for r in state.iterations]),
        ("service $", [usd(*spend.get(r.iteration, (0.0, 0))) for r in state.iterations]),
        ("seconds", [f"{r.seconds:.0f}" for r in state.iterations]),
    ]
    for name, cells in rows:
        table.add_row(name, *cells)
    return table


def gains_table(state: LoopState) -> Table | None:
    """Judge-free metrics of the base model against the best fine-tuned iteration."""
    base, best = state.record(0), state.record(state.best_iteration)
    if base is None or best is None:
        return None
    table = Table(title="judge-free metrics on the test split: base vs fine-tuned (95% CI)")
    for name in ("metric", "base", f"fine-tuned (iter {best.iteration})", "gain"):
        table.add_column(name, justify="right" if name != "metric" else "left")
    for key in sorted(k for k in best.judge_free if k.endswith(".mean")):
        before, after = base.judge_free.get(key), best.judge_free.get(key)
        gain = after.mean - before.mean if before and after and before.mean is not None and after.mean is not None else None
        table.add_row(key, _fmt(before), _fmt(after), "-" if gain is None else f"{gain:+.1f}")
    return table


def _measured(m: MetricSummary | None) -> str:
    return _fmt(m) if m is not None and m.mean is not None else NOT_MEASURED


def ci_verdict(before: MetricSummary | None, after: MetricSummary | None) -> str:
    """Whether two means differ beyond their 95% CIs: intervals that do not overlap (a conservative check, since
    each interval already allows for its own noise), or `not measured` when a mean or an interval is missing."""
    if before is None or after is None or before.mean is None or after.mean is None:
        return NOT_MEASURED
    if None in (before.ci_low, before.ci_high, after.ci_low, after.ci_high) or before.ci_low == before.ci_high or after.ci_low == after.ci_high:
        return f"{NOT_MEASURED}: no 95% CI (too few items)"
    overlap = after.ci_low <= before.ci_high and before.ci_low <= after.ci_high  # type: ignore[operator]
    return "not significant: CIs overlap" if overlap else "significant: CIs do not overlap"


def gain_lines(state: LoopState) -> list[str]:
    """Each judge-free mean of the base model against the best iteration, both with their 95% CIs, the gain, and
    whether the CIs overlap: computed from the run's stored summaries, so the verdict is the data's, not the demo's."""
    base, best = state.record(0), state.record(state.best_iteration)
    if base is None or best is None or best.iteration == 0:
        missing = "the base model was not evaluated (loop.baseline)" if base is None else "no fine-tuned iteration finished"
        return [f"judge-free gain over the base model: {NOT_MEASURED} ({missing})"]
    keys = sorted(k for k in set(base.judge_free) | set(best.judge_free) if k.endswith(".mean"))
    if not keys:
        return [f"judge-free gain over the base model: {NOT_MEASURED} (no judge-free metric was computed)"]
    lines = [f"judge-free gain of iteration {best.iteration} (the best) over the base model, on the test split (95% CIs in brackets):"]
    for key in keys:
        before, after = base.judge_free.get(key), best.judge_free.get(key)
        verdict = ci_verdict(before, after)
        gain = f"{after.mean - before.mean:+.1f}" if verdict != NOT_MEASURED else NOT_MEASURED  # type: ignore[union-attr, operator]
        lines.append(f"  {key}: base {_measured(before)} vs iter {best.iteration} {_measured(after)}; gain {gain}; {verdict}")
    return lines


def summary_lines(state: LoopState, spend: dict[str, Any] | None = None) -> list[str]:
    """Status lines; `spend` is `loop.outcome.group_spend` of the run's ledger rows (by stage or role)."""
    lines = [f"status: {state.status}; stop reason: {state.stop_reason or '-'}; stage: {state.stage}"]
    if state.problem:
        lines.append(state.problem)
    if state.best_iteration is not None:
        lines.append(f"best iteration: {state.best_iteration}; output model: {state.best_model_dir}")
    if spend:
        for key, row in spend.items():
            lines.append(f"spend {key}: ${usd(row['cost_usd'], row['unpriced_requests'])} ({row['input_tokens']} in / {row['output_tokens']} out tokens, "
                         f"{row['requests']} requests)")
        total = sum(row["cost_usd"] for row in spend.values())
        lines.append(f"spend total: ${usd(total, sum(row['unpriced_requests'] for row in spend.values()))} (service ledger)")
    return lines


def print_run(console: Any, state: LoopState, config: Any, *, by: str = "stage", gains: bool = True) -> float:
    """The iteration table, the judge-free gains and the status lines, with spend from the ledger; returns the run's dollars."""
    from llamaduo.loop.outcome import group_spend, iteration_spend, spend_rows

    rows = spend_rows(config, state.run_id)
    console.print(iteration_table(state, iteration_spend(rows)))
    table = gains_table(state) if gains else None
    if table is not None:
        console.print(table)
    for line in summary_lines(state, group_spend(rows, by)):
        console.print(line, markup=False)
    return sum(r.cost_usd for r in rows)
