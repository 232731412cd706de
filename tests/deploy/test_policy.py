"""The promote/rollback state machine on scripted evidence, its replay over a store, and the decision-maker's lease."""

from __future__ import annotations

import pytest

from llamaduo.deploy.migration_config import PolicyConfig
from llamaduo.deploy.policy import Item, PolicyMachine, items_from, target_stat, wilson

POLICY = PolicyConfig(enabled=True, target={"precision.coverage@70": 0.6}, promote_min_judged=6, rollback_min_judged=4,
                      max_fallback_rate=0.25, fallback_min_attempts=4, max_crashes=2, crash_window_s=100)


def judged(ts, score):
    return Item("judged", ts, f"j{ts}", {"scores": {"precision": score, "similarity": score}})


def request(ts, *, local=True, fell_back=False):
    return Item("request", ts, f"r{ts}", {"attempted": local or fell_back, "fell_back": fell_back})


def crash(ts, n, url="http://e/health"):
    return Item("crash", ts, f"{url}#{n}", {"url": url, "crashes": n})


def run(machine, items):
    return [(d.from_mode, d.to_mode) for it in items if (d := machine.feed(it)) is not None]


def test_wilson_interval_is_informative_where_the_bootstrap_is_degenerate():
    assert wilson(1, 1) is None  # one pair: no interval
    lo, hi = wilson(6, 6)
    assert 0.6 < lo < 0.62 and hi == 1.0
    lo, hi = wilson(0, 4)
    assert lo == 0.0 and 0.48 < hi < 0.5
    stat = target_stat("precision.coverage@70", [{"precision": 90}, {"precision": 50}])
    assert stat["estimate"] == 0.5 and stat["ci"] is not None
    mean = target_stat("precision.mean", [{"precision": 80}, {"precision": 80}])
    assert mean["estimate"] == 80 and mean["ci"] is None  # identical scores: the bootstrap has no interval


def test_good_scores_promote_step_by_step_with_fresh_evidence_each_stage():
    machine = PolicyMachine(POLICY, "shadow", 0)
    moves = run(machine, [judged(t, 90) for t in range(1, 6)])
    assert moves == [] and machine.mode == "shadow"  # five pairs: fewer than promote_min_judged
    assert run(machine, [judged(6, 90)]) == [("shadow", "canary")]
    # Canary needs its own six judged pairs and four local answers without fallbacks.
    assert run(machine, [judged(t, 90) for t in range(7, 13)]) == []
    assert run(machine, [request(t) for t in range(13, 17)]) == [("canary", "local")]
    assert run(machine, [judged(t, 95) for t in range(17, 40)]) == []  # local is the top


def test_low_scores_fallbacks_and_crashes_each_roll_back_one_step():
    machine = PolicyMachine(POLICY, "local", 0)
    moves = run(machine, [judged(t, 10) for t in range(1, 5)])
    assert moves == [("local", "canary")]
    decision_evidence = machine.judged  # reset: the canary stage gathers its own
    assert decision_evidence == []
    assert run(machine, [request(t, fell_back=t % 2 == 0) for t in range(5, 9)]) == [("canary", "shadow")]
    assert run(machine, [judged(t, 10) for t in range(9, 30)]) == []  # shadow is the bottom; low scores never promote

    crashing = PolicyMachine(POLICY, "local", 0)
    assert run(crashing, [crash(1, 1), crash(2, 1)]) == []  # the same crash seen by two replicas counts once
    assert run(crashing, [crash(3, 2)]) == [("local", "canary")]
    assert run(crashing, [crash(4, 3)]) == []  # the canary stage counts its own crashes
    assert run(crashing, [crash(300, 4), crash(301, 5)]) == [("canary", "shadow")]


def test_crashes_in_the_window_block_promotion():
    machine = PolicyMachine(POLICY, "shadow", 0)
    assert run(machine, [crash(1, 1), crash(2, 2)] + [judged(t, 90) for t in range(3, 12)]) == []
    assert run(machine, [judged(200, 90)]) == [("shadow", "canary")]  # the crashes left the window


def test_highest_stops_at_canary_and_manual_changes_reset_the_evidence():
    machine = PolicyMachine(POLICY.model_copy(update={"highest": "canary"}), "shadow", 0)
    assert run(machine, [judged(t, 90) for t in range(1, 7)]) == [("shadow", "canary")]
    assert run(machine, [judged(t, 90) for t in range(7, 13)] + [request(t) for t in range(13, 20)]) == []
    machine.feed(Item("manual", 20, "m", {"to_mode": "local"}))
    assert machine.mode == "local" and machine.judged == []


def test_items_come_in_time_order_with_a_stable_tie_break():
    rows = [{"id": "b", "ts": 2.0, "answered_by": "local", "fallback_reason": None},
            {"id": "a", "ts": 1.0, "answered_by": "service", "fallback_reason": "local timed out"}]
    items = items_from(rows, [{"capture_id": "a", "ts": 2.0, "scores": {"precision": 1}}], [])
    assert [(i.kind, i.key) for i in items] == [("request", "a"), ("request", "b"), ("judged", "a")]
    assert items[0].data == {"attempted": True, "fell_back": True}


def test_policy_config_rejects_a_bad_target():
    from llamaduo.errors import LlamaduoError

    with pytest.raises(LlamaduoError, match="metric.stat"):
        PolicyConfig(target={"precision": 0.8})
