"""The demo's closing comparison: base vs the best iteration on each judge-free mean, and whether the 95% CIs overlap."""

from __future__ import annotations

from llamaduo.loop.state import IterationRecord, LoopState, MetricSummary
from llamaduo.loop.view import ci_verdict, gain_lines


def m(mean: float, low: float | None, high: float | None) -> MetricSummary:
    return MetricSummary(mean=mean, ci_low=low, ci_high=high)


def state_with(base: dict[str, MetricSummary] | None, tuned: dict[str, MetricSummary], best: int = 1) -> LoopState:
    records = [IterationRecord(iteration=0, judge_free=base)] if base is not None else []
    records.append(IterationRecord(iteration=1, judge_free=tuned))
    return LoopState(run_id="r", config_hash="h", iterations=records, best_iteration=best)


def test_separate_cis_are_significant_and_touching_or_crossing_ones_are_not():
    state = state_with(
        {"rouge_l.mean": m(27.9, 24.0, 31.8), "embedding.mean": m(71.1, 68.0, 74.0), "rouge_l.coverage@50": m(0.1, 0.0, 0.2)},
        {"rouge_l.mean": m(38.4, 34.2, 42.5), "embedding.mean": m(73.0, 70.1, 75.9), "rouge_l.coverage@50": m(0.3, 0.2, 0.4)},
    )
    lines = gain_lines(state)
    assert lines[0].startswith("judge-free gain of iteration 1 (the best) over the base model")
    assert lines[1:] == [  # sorted by key; coverage rows are left to the tables
        "  embedding.mean: base 71.1 [68.0, 74.0] vs iter 1 73.0 [70.1, 75.9]; gain +1.9; not significant: CIs overlap",
        "  rouge_l.mean: base 27.9 [24.0, 31.8] vs iter 1 38.4 [34.2, 42.5]; gain +10.5; significant: CIs do not overlap",
    ]
    # Intervals that share only an end point overlap; a loss beyond the CIs is significant too, with its sign.
    assert ci_verdict(m(30, 25, 35), m(40, 35, 45)) == "not significant: CIs overlap"
    assert ci_verdict(m(40, 35, 45), m(30, 25, 34.9)) == "significant: CIs do not overlap"


def test_missing_base_iteration_or_interval_is_not_measured():
    assert gain_lines(state_with(None, {"rouge_l.mean": m(38.4, 34.2, 42.5)})) == [
        "judge-free gain over the base model: not measured (the base model was not evaluated (loop.baseline))"]
    no_trained = state_with({"rouge_l.mean": m(27.9, 24.0, 31.8)}, {}, best=None)  # type: ignore[arg-type]
    assert gain_lines(no_trained) == ["judge-free gain over the base model: not measured (no fine-tuned iteration finished)"]
    one_item = state_with({"rouge_l.mean": m(27.9, None, None)}, {"rouge_l.mean": m(38.4, 34.2, 42.5)})
    assert gain_lines(one_item)[1] == "  rouge_l.mean: base 27.9 vs iter 1 38.4 [34.2, 42.5]; gain +10.5; not measured: no 95% CI (too few items)"
    absent = state_with({"embedding.mean": m(70.0, 65.0, 75.0)}, {"rouge_l.mean": m(38.4, 34.2, 42.5)})
    assert gain_lines(absent)[1:] == ["  embedding.mean: base 70.0 [65.0, 75.0] vs iter 1 not measured; gain not measured; not measured",
                                      "  rouge_l.mean: base not measured vs iter 1 38.4 [34.2, 42.5]; gain not measured; not measured"]
