"""The promote/rollback state machine (shadow <-> canary <-> local) and its replay over the stored history.

The machine reads evidence one item at a time, in time order: a request (did a local answer fall back?), a judged pair
(its live scores) or an engine crash. The live decision-maker and `llamaduo gateway --dry-run-policy` feed it the same
items the same way, so a replay of the store reproduces the transitions the gateway made.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llamaduo.deploy.migration_config import PolicyConfig
from llamaduo.evaluate.aggregate import parse_target_key

STAGES = ("shadow", "canary", "local")
Z95 = 1.959963984540054
_KIND_ORDER = {"manual": 0, "crash": 1, "request": 2, "judged": 3}


@dataclass
class Item:
    """One piece of evidence: kind request | judged | crash | manual, at `ts` (epoch seconds)."""

    kind: str
    ts: float
    key: str
    data: dict[str, Any] = field(default_factory=dict)

    def order(self) -> tuple[float, int, str]:
        return (self.ts, _KIND_ORDER[self.kind], self.key)


@dataclass
class Decision:
    from_mode: str
    to_mode: str
    ts: float
    reason: str
    evidence: dict[str, Any]


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a share; unlike a bootstrap it stays informative when every pair passes."""
    if n < 2:
        return None
    p, z2 = successes / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def target_stat(key: str, scores: list[dict[str, float]]) -> dict[str, Any]:
    """`metric.stat` over judged pairs: its estimate, 95% CI (None: unavailable) and the pairs it rests on.

    coverage@T uses the Wilson interval of a share; mean uses the bootstrap of `llamaduo eval` (seed 0), which is
    unavailable for fewer than 2 pairs or when every score is the same.
    """
    metric, stat = parse_target_key(key)
    values = [float(s[metric]) for s in scores if s.get(metric) is not None]
    n = len(values)
    if not n:
        return {"n": 0, "estimate": None, "ci": None}
    if stat.startswith("coverage@"):
        threshold = float(stat.split("@", 1)[1])
        passed = sum(v >= threshold for v in values)
        ci = wilson(passed, n)
        return {"n": n, "estimate": passed / n, "ci": list(ci) if ci else None}
    from llamaduo.evaluate.aggregate import summarize

    summary = summarize(values, [], resamples=1000, seed=0)
    ci = summary.interval("mean")
    estimate = summary.mean if stat == "mean" else summary.median
    return {"n": n, "estimate": estimate, "ci": list(ci) if ci and stat == "mean" else None}


def _fmt(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f}" if abs(value) <= 1 else f"{value:.1f}")


class PolicyMachine:
    """The current stage and the evidence gathered since entering it; `feed` returns a Decision when the stage changes."""

    def __init__(self, policy: PolicyConfig, mode: str, entered: float = float("-inf")):
        self.policy = policy
        self.mode = mode
        self.entered = entered
        self.crashes: deque[tuple[float, str]] = deque()
        self._seen_crashes: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.judged: list[dict[str, float]] = []
        self.attempts: deque[bool] = deque(maxlen=self.policy.fallback_min_attempts)
        self.attempt_count = 0
        self.stage_crashes = 0
        self._scores_verdict: tuple[str, dict[str, Any]] | None = None  # ("promote" | "rollback" | "", evidence)

    def remember_crash(self, item: Item) -> None:
        """A crash from before this machine's stage (a lease taken over): it counts in the window, not in the stage."""
        if item.key not in self._seen_crashes:
            self._seen_crashes.add(item.key)
            self.crashes.append((item.ts, item.key))

    def jump(self, mode: str, ts: float) -> None:
        """A mode set from outside the policy (a manual event): evidence starts again."""
        self.mode, self.entered = mode, ts
        self._reset()

    def feed(self, item: Item) -> Decision | None:
        if item.kind == "manual":
            self.jump(item.data["to_mode"], item.ts)
            return None
        if self.mode not in STAGES:
            return None  # capture mode: nothing local to judge
        if item.kind == "request":
            if item.data.get("attempted"):
                self.attempts.append(bool(item.data.get("fell_back")))
                self.attempt_count += 1
        elif item.kind == "judged":
            self.judged.append(item.data.get("scores") or {})
            self._scores_verdict = None
        elif item.kind == "crash":
            if item.key in self._seen_crashes:  # two replicas saw the same crash of one shared engine
                return None
            self._seen_crashes.add(item.key)
            self.crashes.append((item.ts, item.key))
            self.stage_crashes += 1
        while self.crashes and self.crashes[0][0] < item.ts - self.policy.crash_window_s:
            self.crashes.popleft()
        return self._decide(item.ts)

    # ---- the rules -----------------------------------------------------------------------------

    def _decide(self, ts: float) -> Decision | None:
        p, index = self.policy, STAGES.index(self.mode)
        crashes = self._crash_evidence(ts)
        if index > 0:
            if crashes["since_stage"] >= p.max_crashes:
                return self._move(index - 1, ts, f"the engine crashed {crashes['since_stage']} times within {p.crash_window_s:g}s "
                                                 f"(limit {p.max_crashes})", {"crashes": crashes})
            fallback = self._fallback_evidence()
            if fallback["attempts"] >= p.fallback_min_attempts and fallback["rate"] > p.max_fallback_rate:
                return self._move(index - 1, ts, f"fallback rate {fallback['rate']:.2f} over the last {fallback['attempts']} local answers "
                                                 f"> {p.max_fallback_rate:g}", {"fallback": fallback})
            verdict, evidence = self._scores()
            if verdict == "rollback":
                return self._move(index - 1, ts, "live scores below target: " + evidence["text"], {"scores": evidence})
        if self.mode == p.highest or index == len(STAGES) - 1:
            return None
        verdict, evidence = self._scores()
        if verdict != "promote" or crashes["in_window"] >= p.max_crashes:
            return None
        extra: dict[str, Any] = {"scores": evidence, "crashes": crashes}
        if self.mode == "canary":
            fallback = self._fallback_evidence()
            if fallback["attempts"] < p.fallback_min_attempts or fallback["rate"] > p.max_fallback_rate:
                return None
            extra["fallback"] = fallback
        return self._move(index + 1, ts, "live scores meet the target: " + evidence["text"], extra)

    def _scores(self) -> tuple[str, dict[str, Any]]:
        """Promote when every target's CI lower bound reaches it over >= promote_min_judged pairs; roll back when one
        target's CI upper bound (of the last rollback_min_judged) is below it. Without a CI (all scores equal) the estimate stands in."""
        if self._scores_verdict is not None:
            return self._scores_verdict
        p = self.policy
        verdict, parts, checks = "", [], {}
        if len(self.judged) >= p.rollback_min_judged and self.mode != "shadow":
            recent = self.judged[-p.rollback_min_judged:]
            for key, required in p.target.items():
                stat = target_stat(key, recent)
                upper = stat["ci"][1] if stat["ci"] else stat["estimate"]
                checks[key] = {**stat, "required": required, "bound": upper, "pairs": "last"}
                if upper is not None and upper < required:
                    verdict = "rollback"
                    parts.append(f"{key} = {_fmt(stat['estimate'])}, 95% CI upper bound {_fmt(upper)} < {required:g} "
                                 f"over the last {stat['n']} judged pairs")
        if not verdict and len(self.judged) >= p.promote_min_judged:
            checks, ok = {}, True
            for key, required in p.target.items():
                stat = target_stat(key, self.judged)
                lower = stat["ci"][0] if stat["ci"] else stat["estimate"]
                checks[key] = {**stat, "required": required, "bound": lower, "pairs": "since_stage"}
                ok = ok and lower is not None and lower >= required
                parts.append(f"{key} = {_fmt(stat['estimate'])}, 95% CI lower bound {_fmt(lower)} "
                             f"{'>=' if lower is not None and lower >= required else '<'} {required:g} over {stat['n']} judged pairs")
            verdict = "promote" if ok else ""
        self._scores_verdict = (verdict, {"judged_since_stage": len(self.judged), "targets": checks, "text": "; ".join(parts)})
        return self._scores_verdict

    def _fallback_evidence(self) -> dict[str, Any]:
        attempts = len(self.attempts)
        fell = sum(self.attempts)
        return {"attempts": attempts, "fallbacks": fell, "rate": fell / attempts if attempts else 0.0,
                "attempts_since_stage": self.attempt_count}

    def _crash_evidence(self, ts: float) -> dict[str, Any]:
        since = sum(1 for t, _ in self.crashes if t >= self.entered)
        return {"in_window": len(self.crashes), "since_stage": min(since, self.stage_crashes), "window_s": self.policy.crash_window_s}

    def _move(self, index: int, ts: float, reason: str, evidence: dict[str, Any]) -> Decision:
        decision = Decision(self.mode, STAGES[index], ts, reason, evidence)
        self.mode, self.entered = STAGES[index], ts
        self._reset()
        return decision


def items_from(requests: list[dict], judged: list[dict], crashes: list[dict], manual: list[dict] = ()) -> list[Item]:
    """The store's rows as time-ordered evidence items."""
    items = []
    for r in requests:
        attempted = r["answered_by"] == "local" or r.get("fallback_reason") is not None
        items.append(Item("request", r["ts"], r["id"], {"attempted": attempted, "fell_back": r.get("fallback_reason") is not None}))
    for j in judged:
        items.append(Item("judged", j["ts"], j["capture_id"], {"scores": j.get("scores") or {}}))
    for c in crashes:
        ev = c.get("evidence") or {}
        items.append(Item("crash", c["ts"], f"{ev.get('url')}#{ev.get('crashes')}", ev))
    for m in manual:
        items.append(Item("manual", m["ts"], str(m["id"]), {"to_mode": m["to_mode"]}))
    return sorted(items, key=Item.order)


def replay(live_store: Any, policy: PolicyConfig, configured_mode: str) -> tuple[list[Decision], list[dict[str, Any]]]:
    """What the policy would have done over the whole stored history: (its transitions, the recorded ones).

    It starts where the store's history starts (the recorded start event, else the configured mode) and takes manual mode
    changes as they were made. After a transition the live gateway did not make, the traffic it replays is still the
    traffic of the mode the gateway was really in.
    """
    import time

    events = live_store.events_list()
    start = next((e for e in events if e["kind"] == "start"), None)
    mode = start["to_mode"] if start else configured_mode
    since = start["ts"] if start else None
    requests, judged, crashes = live_store.evidence(since, time.time() + 1)
    manual = [e for e in events if e["kind"] == "manual"]
    machine = PolicyMachine(policy, mode, since if since is not None else float("-inf"))
    decisions = [d for item in items_from(requests, judged, crashes, manual) if (d := machine.feed(item)) is not None]
    return decisions, [e for e in events if e["kind"] == "transition"]


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"


def dry_run(settings: Any, base: Any) -> list[str]:
    """`llamaduo gateway --dry-run-policy`: the replay's transitions beside the recorded ones, as lines to print."""
    import time

    from llamaduo.deploy.gateway_run import open_store
    from llamaduo.deploy.livestore import LiveStore

    store = open_store(settings, base)
    try:
        live = LiveStore(store)
        decisions, recorded = replay(live, settings.policy, settings.mode)
        requests, judged, crashes = live.evidence(None, time.time() + 1)
    finally:
        store.close()
    targets = ", ".join(f"{k} >= {v:g}" for k, v in settings.policy.target.items())
    out = [f"replaying {len(requests)} requests, {len(judged)} judged pairs and {len(crashes)} engine crash(es) through the policy ({targets})"]
    out += [f"would: {_when(d.ts)} {d.from_mode} -> {d.to_mode}: {d.reason}" for d in decisions]
    if not decisions:
        out.append("would: no transition")
    out += [f"recorded: {_when(e['ts'])} {e['from_mode']} -> {e['to_mode']}: {e['reason']}" for e in recorded]
    replayed = [(d.from_mode, d.to_mode) for d in decisions]
    actual = [(e["from_mode"], e["to_mode"]) for e in recorded]
    if replayed == actual:
        out.append(f"the replay makes the {len(actual)} recorded transition(s), in the same order")
    else:
        out.append(f"the replay differs from the record: {len(replayed)} transition(s) against {len(actual)} recorded "
                   "(a changed policy, or traffic the gateway saw in a mode the replay left)")
    return out


def set_mode_by_hand(settings: Any, base: Any, mode: str) -> str:
    """`llamaduo gateway --set-mode MODE`: a manual event every replica follows at its next turn; the policy starts over from it."""
    import getpass
    import socket

    from llamaduo.deploy.gateway_run import open_store
    from llamaduo.deploy.livestore import LiveStore
    from llamaduo.errors import LlamaduoError

    if mode not in STAGES:
        raise LlamaduoError(f"--set-mode {mode!r} is not a mode the policy manages", f"Use one of {', '.join(STAGES)}.")
    if not settings.policy.enabled:
        raise LlamaduoError("--set-mode changes the mode kept in the capture store, which only a gateway with deploy.gateway.policy.enabled follows",
                            "Set deploy.gateway.mode (or --mode) instead, or enable the policy.")
    store = open_store(settings, base)
    try:
        live = LiveStore(store)
        current, _ = live.current_mode()
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        live.add_event("manual", from_mode=current or settings.mode, to_mode=mode, reason=f"set by hand by {who}", replica=who)
    finally:
        store.close()
    return f"mode {current or settings.mode} -> {mode}, recorded in the capture store; running replicas follow within deploy.gateway.policy.interval_s"
