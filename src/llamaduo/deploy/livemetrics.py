"""Live metrics over a sliding window of the capture store: the live scores (mean, coverage@T, 95% CIs), the local model's
fallback and error rates and latency against the service's, and the judge spend from the ledger.

One snapshot feeds `llamaduo status --live`, the gateway's /metrics and the live section of `llamaduo report`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llamaduo.deploy.livestore import LiveStore, day_start, epoch
from llamaduo.deploy.policy import target_stat  # coverage CIs are Wilson intervals, mean CIs eval's bootstrap

UNAVAILABLE = "unavailable"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ledger_spend(ledger_path: Path, since: float) -> tuple[float, int]:
    """(USD, requests) of ledger stage live_eval since `since`, read from the project's service ledger."""
    import sqlite3

    if not ledger_path.is_file():
        return 0.0, 0
    with sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            usd, requests = conn.execute("SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(CASE WHEN cache_hit = 0 THEN requests ELSE 0 END), 0)"
                                         " FROM ledger WHERE stage = 'live_eval' AND ts >= ?", (since,)).fetchone()
        except sqlite3.OperationalError:  # no ledger table yet
            return 0.0, 0
    return float(usd), int(requests)


def snapshot(config: Any, store: LiveStore, now: float | None = None) -> dict[str, Any]:
    """Everything the live views show, measured over the last `live_eval.window` requests and judged pairs."""
    gw = config.deploy.gateway
    now = time.time() if now is None else now
    requests, score_rows = store.window(gw.live_eval.window)
    judged = [r for r in score_rows if r["status"] == "judged"]
    mode, mode_since = store.current_mode()
    holder, expires = store.lease_holder()
    thresholds = sorted({*config.evaluate.thresholds, *(float(k.split("@", 1)[1]) for k in gw.policy.target if "@" in k)})
    metrics = sorted({m for r in judged for m in (r["scores"] or {})})
    scores = {}
    for metric in metrics:
        values = [r["scores"] for r in judged]
        mean = target_stat(f"{metric}.mean", values)
        coverage = {}
        for t in thresholds:
            stat = target_stat(f"{metric}.coverage@{t:g}", values)
            coverage[f"{t:g}"] = {"value": stat["estimate"], "ci": stat["ci"]}
        scores[metric] = {"n": mean["n"], "mean": mean["estimate"], "mean_ci": mean["ci"], "coverage": coverage}
    # The window's spend starts with its oldest request: a pair's ledger rows are written before its score row.
    oldest = min([r["ts"] for r in score_rows] + [epoch(r["created_at"]) for r in requests], default=now)
    ledger = config.path(config.service.cache_path)
    spend_window, requests_window = ledger_spend(ledger, oldest)
    spend_today, _ = ledger_spend(ledger, day_start(now))
    statuses: dict[str, int] = {}
    for r in score_rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "mode": mode or gw.mode, "mode_since": mode_since, "policy": gw.policy.enabled, "decider": holder if expires and expires > now else None,
        "window": {"requests": len(requests), "live_rows": len(score_rows), "size": gw.live_eval.window},
        "live": {"share": gw.live_eval.share if gw.live_eval.enabled else 0.0, "judged": len(judged), "statuses": statuses,
                 "daily_budget_usd": gw.live_eval.daily_budget_usd},
        "scores": scores,
        "traffic": traffic(requests),
        "spend": {"window_usd": spend_window, "window_requests": requests_window, "today_usd": spend_today,
                  "today_store_usd": store.spent_since(day_start(now))},
        "last_transition": _last_transition(store),
    }


def traffic(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The local model against the service over the window's requests."""
    attempts = [r for r in requests if r["answered_by"] == "local" or r["fallback_reason"] is not None]
    fallbacks = [r for r in attempts if r["fallback_reason"] is not None]
    shadows = [r for r in requests if r["answered_by"] != "local" and r["local_response"] is not None]
    shadow_errors = [r for r in shadows if "error" in (r["local_response"] or {}) and "choices" not in r["local_response"]]
    local_ms = [r["latency_ms"] for r in requests if r["answered_by"] == "local" and r["latency_ms"] is not None]
    local_ms += [r["local_latency_ms"] for r in shadows if r not in shadow_errors and r["local_latency_ms"] is not None]
    service_rows = [r for r in requests if r["answered_by"] == "service" and r["fallback_reason"] is None]
    service_ok = [r["latency_ms"] for r in service_rows if r["status"] == 200 and r["latency_ms"] is not None]
    service_errors = [r for r in service_rows if r["status"] != 200]
    local_tries = len(attempts) + len(shadows)
    return {
        "local": {"attempts": len(attempts), "fallbacks": len(fallbacks), "fallback_rate": len(fallbacks) / len(attempts) if attempts else None,
                  "shadow": len(shadows), "shadow_errors": len(shadow_errors), "tries": local_tries,
                  "error_rate": (len(fallbacks) + len(shadow_errors)) / local_tries if local_tries else None,
                  "p50_ms": percentile(local_ms, 50), "p99_ms": percentile(local_ms, 99), "latency_n": len(local_ms)},
        "service": {"requests": len(service_rows), "errors": len(service_errors),
                    "error_rate": len(service_errors) / len(service_rows) if service_rows else None,
                    "p50_ms": percentile(service_ok, 50), "p99_ms": percentile(service_ok, 99), "latency_n": len(service_ok)},
    }


def _last_transition(store: LiveStore) -> dict[str, Any] | None:
    events = store.events_list(("transition", "manual"))
    if not events:
        return None
    e = events[-1]
    return {"ts": e["ts"], "from": e["from_mode"], "to": e["to_mode"], "reason": e["reason"], "kind": e["kind"]}


# ---- rendering ---------------------------------------------------------------------------------

def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(ci: list[float] | None, digits: int = 1) -> str:
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else UNAVAILABLE


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def lines(snap: dict[str, Any]) -> list[str]:
    """The snapshot as plain text lines (status --live, the report's Markdown)."""
    w, live, t, spend = snap["window"], snap["live"], snap["traffic"], snap["spend"]
    out = [f"mode: {snap['mode']}" + (" (policy on" + (f", decided by {snap['decider']})" if snap["decider"] else ")") if snap["policy"] else " (policy off)")]
    if snap["last_transition"]:
        lt = snap["last_transition"]
        out.append(f"last change: {lt['from']} -> {lt['to']} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(lt['ts']))} UTC: {lt['reason']}")
    out.append(f"window: last {w['requests']} requests, {live['judged']} judged pairs (of the last {w['size']}); judging share {live['share']:g}"
               + (", " + ", ".join(f"{k} {v}" for k, v in sorted(live["statuses"].items())) if live["statuses"] else ""))
    if not snap["scores"]:
        out.append("live scores: none judged in the window")
    for metric, s in snap["scores"].items():
        cover = "; ".join(f"coverage@{k} {_num(c['value'], 2)} 95% CI {_ci(c['ci'], 2)}" for k, c in s["coverage"].items())
        out.append(f"{metric}: n={s['n']} mean {_num(s['mean'])} 95% CI {_ci(s['mean_ci'])}; {cover}")
    lo, sv = t["local"], t["service"]
    out.append(f"local:   fallback rate {_rate(lo['fallback_rate'])} ({lo['fallbacks']}/{lo['attempts']} answers), error rate {_rate(lo['error_rate'])} "
               f"({lo['fallbacks'] + lo['shadow_errors']}/{lo['tries']} tries), latency p50 {_num(lo['p50_ms'])} ms p99 {_num(lo['p99_ms'])} ms (n={lo['latency_n']})")
    out.append(f"service: error rate {_rate(sv['error_rate'])} ({sv['errors']}/{sv['requests']}), latency p50 {_num(sv['p50_ms'])} ms "
               f"p99 {_num(sv['p99_ms'])} ms (n={sv['latency_n']})")
    budget = live["daily_budget_usd"]
    out.append(f"judge spend (ledger, stage live_eval): ${spend['window_usd']:.4f} over the window ({spend['window_requests']} paid requests), "
               f"${spend['today_usd']:.4f} today" + (f" of ${budget:.2f} a day (all replicas: ${spend['today_store_usd']:.4f})" if budget is not None else ""))
    return out


def markdown(snap: dict[str, Any]) -> str:
    return "\n".join(["## Live traffic (gateway)", "", *[f"- {line}" for line in lines(snap)], ""])


def html(snap: dict[str, Any]) -> str:
    from markupsafe import escape

    items = "".join(f"<li>{escape(line)}</li>" for line in ([snap["error"]] if "error" in snap else lines(snap)))
    return f'<section id="live"><h2>Live traffic (gateway)</h2><ul>{items}</ul></section>'


def prometheus(snap: dict[str, Any]):
    """The snapshot as Prometheus gauges (a collector's `collect` result)."""
    from prometheus_client.core import GaugeMetricFamily

    mode = GaugeMetricFamily("llamaduo_gateway_mode", "1 for the gateway's current mode", labels=["mode"])
    for m in ("capture", "shadow", "canary", "local"):
        mode.add_metric([m], 1.0 if snap["mode"] == m else 0.0)
    yield mode
    judged = GaugeMetricFamily("llamaduo_gateway_live_judged_pairs", "Judged pairs in the sliding window")
    judged.add_metric([], snap["live"]["judged"])
    yield judged
    mean = GaugeMetricFamily("llamaduo_gateway_live_score", "Live score statistics over the window (mean on 0-100, coverage as a 0-1 share; "
                             "ci_low/ci_high only where a 95% CI is available)", labels=["metric", "stat", "bound"])
    for metric, s in snap["scores"].items():
        if s["mean"] is not None:
            mean.add_metric([metric, "mean", "value"], s["mean"])
        for bound, i in (("ci_low", 0), ("ci_high", 1)):
            if s["mean_ci"]:
                mean.add_metric([metric, "mean", bound], s["mean_ci"][i])
        for t, c in s["coverage"].items():
            if c["value"] is not None:
                mean.add_metric([metric, f"coverage@{t}", "value"], c["value"])
            for bound, i in (("ci_low", 0), ("ci_high", 1)):
                if c["ci"]:
                    mean.add_metric([metric, f"coverage@{t}", bound], c["ci"][i])
    yield mean
    rates = GaugeMetricFamily("llamaduo_gateway_window_rate", "Fallback and error rates over the window", labels=["upstream", "rate"])
    latency = GaugeMetricFamily("llamaduo_gateway_window_latency_ms", "Latency quantiles over the window", labels=["upstream", "quantile"])
    for name in ("local", "service"):
        t = snap["traffic"][name]
        for key in ("fallback_rate", "error_rate"):
            if t.get(key) is not None:
                rates.add_metric([name, key.removesuffix("_rate")], t[key])
        for q in ("p50", "p99"):
            if t[f"{q}_ms"] is not None:
                latency.add_metric([name, q], t[f"{q}_ms"])
    yield rates
    yield latency
    spend = GaugeMetricFamily("llamaduo_gateway_live_judge_spend_usd", "Live judging spend from the ledger", labels=["period"])
    spend.add_metric(["window"], snap["spend"]["window_usd"])
    spend.add_metric(["today"], snap["spend"]["today_usd"])
    yield spend


def live_status(config: Any, *, as_json: bool = False) -> list[str]:
    """`llamaduo status --live`: the snapshot of the project's capture store, as lines (or one JSON document)."""
    import json

    from llamaduo.deploy.gateway_run import open_store
    from llamaduo.errors import LlamaduoError

    if _missing_sqlite(config):
        raise LlamaduoError(f"there is no capture store at {config.deploy.gateway.store_url} (in {config.workdir})",
                            "Run `llamaduo gateway` with deploy.gateway.live_eval.enabled first, or point --config at the gateway's project.")
    store = open_store(config.deploy.gateway, config.workdir)
    try:
        snap = snapshot(config, LiveStore(store))
    finally:
        store.close()
    return [json.dumps(snap, indent=2)] if as_json else lines(snap)


def report_section(config: Any) -> tuple[str, str] | None:
    """(Markdown, HTML) of the live section of `llamaduo report`; None when the capture store holds no live judgment
    or mode change (a SQLite store that does not exist is not created)."""
    from llamaduo.deploy.gateway_run import open_store

    from llamaduo.errors import LlamaduoError

    if _missing_sqlite(config):
        return None
    try:
        store = open_store(config.deploy.gateway, config.workdir)
    except LlamaduoError as exc:  # a database that is down must not stop the run's report
        note = f"The capture store could not be read: {exc.message}"
        return f"## Live traffic (gateway)\n\n{note}\n", html({"error": note})
    try:
        live = LiveStore(store)
        with live.engine.connect() as conn:
            count = conn.execute(live.sa.select(live.sa.func.count()).select_from(live.scores)).scalar()
        if not count and not live.events_list():
            return None
        snap = snapshot(config, live)
    finally:
        store.close()
    return markdown(snap), html(snap)


def _missing_sqlite(config: Any) -> bool:
    """Whether the store is a SQLite file that does not exist (reading it must not create it)."""
    url = config.deploy.gateway.store_url
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return False
    return not (config.workdir / url[len("sqlite:///"):]).is_file()  # an absolute path stays absolute under `/`
