"""Cost projection: the monthly bill of the service LLM against hosting the fine-tuned model, and when the switch pays off.

Mirrors the paper's Fig. 4 / Table 2: cumulative cost of both options month by month, the break-even month and
12-month totals, with light and heavy load presets whose numbers users replace with today's prices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from llamaduo.errors import LlamaduoError
from llamaduo.service.config import Price
from llamaduo.service.prices import find_price

HOURS_PER_MONTH = 365 * 24 / 12  # 730: cloud GPU bills are quoted per hour, budgets per month


class Workload(BaseModel):
    """What the application asks: requests a month and the average tokens of one request."""

    requests_per_month: float
    input_tokens: float
    """Average prompt tokens per request."""
    output_tokens: float
    """Average answer tokens per request."""
    source: str = "given"
    """Where the token profile came from (given, or the coverage data)."""


class LocalHosting(BaseModel):
    """Serving the fine-tuned model yourself on rented GPUs."""

    gpu_hourly_usd: float
    """Price of one GPU hour."""
    throughput_tps: float
    """Generated tokens per second one GPU sustains at full load (batched)."""
    utilisation: float = 0.5
    """Share of that capacity real traffic uses (peaks, idle nights); capacity is sized for it."""
    always_on: bool = True
    """Bill every hour of the month (a reserved server) rather than only the busy hours."""
    one_off_usd: float = 0.0
    """The migration itself: service spend of the run (generation, judging) plus fine-tuning compute."""
    monthly_overhead_usd: float = 0.0
    """Anything else local hosting costs each month (storage, egress, monitoring)."""


class Preset(BaseModel):
    description: str
    service_model: str
    workload: Workload
    local: LocalHosting


# The paper's scenario structure (light and heavy load; a GPT-4o-class service model against a 7B-class
# model on one cloud GPU type). The numbers are illustrative starting points: replace them with your
# traffic and today's prices (`--gpu-hourly`, `--throughput`, service.prices in llamaduo.yaml).
PRESETS: dict[str, Preset] = {
    "light": Preset(
        description="10k requests/day, 500 prompt + 250 answer tokens; 24 GB GPU at $1.00/h, 400 tok/s, 50% utilisation",
        service_model="gpt-4o",
        workload=Workload(requests_per_month=300_000, input_tokens=500, output_tokens=250, source="preset light"),
        local=LocalHosting(gpu_hourly_usd=1.00, throughput_tps=400, utilisation=0.5, one_off_usd=500),
    ),
    "heavy": Preset(
        description="50k requests/day, 1000 prompt + 500 answer tokens; 24 GB GPUs at $1.00/h, 400 tok/s, 50% utilisation",
        service_model="gpt-4o",
        workload=Workload(requests_per_month=1_500_000, input_tokens=1000, output_tokens=500, source="preset heavy"),
        local=LocalHosting(gpu_hourly_usd=1.00, throughput_tps=400, utilisation=0.5, one_off_usd=2000),
    ),
}


class Projection(BaseModel):
    """Month-by-month cumulative cost of staying on the service LLM against moving to local hosting."""

    service_model: str
    price: Price
    workload: Workload
    local: LocalHosting
    months: int
    service_monthly_usd: float
    local_monthly_usd: float
    gpus: int
    """GPUs needed to carry the load at the given utilisation (always-on billing)."""
    gpu_hours_per_month: float
    service_cumulative: list[float] = Field(default_factory=list)
    """Index m-1: total spent after m months."""
    local_cumulative: list[float] = Field(default_factory=list)
    break_even_month: int | None
    """First whole month after which local hosting has cost less in total (None: never at these prices)."""
    break_even_exact: float | None
    service_total_usd: float
    local_total_usd: float
    savings_usd: float

    def summary_lines(self) -> list[str]:
        w, loc = self.workload, self.local
        be = (f"break-even after month {self.break_even_month} ({self.break_even_exact:.2f} months)"
              if self.break_even_month is not None else "no break-even: local hosting costs at least as much every month")
        return [
            f"workload: {w.requests_per_month:,.0f} requests/month, {w.input_tokens:,.0f} prompt + {w.output_tokens:,.0f} answer tokens ({w.source})",
            f"service {self.service_model}: ${self.price.input:g}/M in, ${self.price.output:g}/M out -> ${self.service_monthly_usd:,.2f}/month",
            f"local: {self.gpus} GPU(s) x ${loc.gpu_hourly_usd:g}/h, {loc.throughput_tps:g} tok/s at {loc.utilisation:.0%} utilisation"
            f" -> ${self.local_monthly_usd:,.2f}/month + ${loc.one_off_usd:,.2f} one-off",
            f"{self.months}-month totals: service ${self.service_total_usd:,.2f}, local ${self.local_total_usd:,.2f},"
            f" {'saving' if self.savings_usd >= 0 else 'extra cost'} ${abs(self.savings_usd):,.2f}",
            be,
        ]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "more than zero"
        raise LlamaduoError(f"cost input {name} is {value}; it must be {need}", f"Pass a positive {name}")


def validate_inputs(workload: Workload, local: LocalHosting, months: int) -> None:
    """Reject zero and negative inputs with one line naming the bad value (a zero price silently hides a cost)."""
    _positive("requests per month", workload.requests_per_month)
    _positive("input tokens", workload.input_tokens)
    _positive("output tokens", workload.output_tokens)
    _positive("GPU hourly price", local.gpu_hourly_usd)
    _positive("throughput", local.throughput_tps)
    _positive("utilisation", local.utilisation)
    if local.utilisation > 1:
        raise LlamaduoError(f"utilisation is {local.utilisation}; it is a share of GPU capacity", "Pass a value in (0, 1], e.g. 0.5")
    _positive("one-off cost", local.one_off_usd, allow_zero=True)
    _positive("monthly overhead", local.monthly_overhead_usd, allow_zero=True)
    if months < 1:
        raise LlamaduoError(f"months is {months}", "Project over 1 month or more")


def resolve_price(model: str, overrides: dict[str, Price] | None = None) -> Price:
    price = find_price(model, overrides)
    if price is None:
        raise LlamaduoError(f"no price known for service model {model}", f"Add service.prices.{model} to llamaduo.yaml or pick a listed model")
    if price.input <= 0 and price.output <= 0:
        raise LlamaduoError(f"the price of {model} is zero", f"Set a positive service.prices.{model}")
    return price


def project(service_model: str, workload: Workload, local: LocalHosting, *, months: int = 12,
            prices: dict[str, Price] | None = None) -> Projection:
    """Project both options over `months`; the break-even is where cumulative local cost drops below the service's."""
    validate_inputs(workload, local, months)
    price = resolve_price(service_model, prices)
    per_request = (workload.input_tokens * price.input + workload.output_tokens * price.output) / 1e6
    service_monthly = workload.requests_per_month * per_request
    tokens_per_second = workload.requests_per_month * workload.output_tokens / (HOURS_PER_MONTH * 3600)
    capacity = local.throughput_tps * local.utilisation
    busy_hours = workload.requests_per_month * workload.output_tokens / capacity / 3600
    gpus = max(1, math.ceil(tokens_per_second / capacity - 1e-9))
    hours = gpus * HOURS_PER_MONTH if local.always_on else busy_hours
    local_monthly = hours * local.gpu_hourly_usd + local.monthly_overhead_usd
    service_cum = [service_monthly * m for m in range(1, months + 1)]
    local_cum = [local.one_off_usd + local_monthly * m for m in range(1, months + 1)]
    saving_per_month = service_monthly - local_monthly
    exact = local.one_off_usd / saving_per_month if saving_per_month > 0 else None
    whole = max(1, math.ceil(exact - 1e-9)) if exact is not None else None
    return Projection(
        service_model=service_model, price=price, workload=workload, local=local, months=months,
        service_monthly_usd=service_monthly, local_monthly_usd=local_monthly, gpus=gpus, gpu_hours_per_month=hours,
        service_cumulative=service_cum, local_cumulative=local_cum, break_even_month=whole, break_even_exact=exact,
        service_total_usd=service_cum[-1], local_total_usd=local_cum[-1], savings_usd=service_cum[-1] - local_cum[-1],
    )


def token_profile(config: Any, splits: Sequence[str] = ("train", "test"), tokenizer: str | None = None) -> tuple[float, float, int]:
    """Mean prompt and answer tokens of the coverage dataset (the real traffic the app sent the service LLM)."""
    from llamaduo.data.stats import token_counter
    from llamaduo.data.store import DatasetStore
    from llamaduo.data.text import user_text

    store = DatasetStore(config.path(config.data.store))
    examples = [e for split in splits for e in store.examples(split)]
    examples = [e for e in examples if e.reference]
    if not examples:
        raise LlamaduoError(f"the dataset store {store.root} has no {'/'.join(splits)} examples to measure tokens from",
                            "Run `llamaduo data ingest` and `data split`, or pass --input-tokens and --output-tokens")
    _, count = token_counter(tokenizer)
    prompts = count([user_text(e) for e in examples])
    answers = count([e.reference or "" for e in examples])
    return sum(prompts) / len(prompts), sum(answers) / len(answers), len(examples)


def measured_throughput(run_root: Any) -> float | None:
    """Generated tokens per second of the run's latest inference (`infer_finished` events; training events also
    carry a tokens_per_s, of tokens read, which says nothing about serving)."""
    from llamaduo.report.loader import read_rows

    rates = [float(e["tokens_per_s"]) for e in read_rows(run_root / "events.jsonl")
             if isinstance(e, dict) and str(e.get("event", "")).startswith("infer") and isinstance(e.get("tokens_per_s"), int | float) and e["tokens_per_s"] > 0]
    return rates[-1] if rates else None


def run_one_off(config: Any, run_id: str, gpu_hourly_usd: float) -> tuple[float, str]:
    """What a finished run cost once: its service spend from the ledger plus its loop time billed as GPU hours."""
    from llamaduo.report.loader import load_run
    from llamaduo.report.spend import spend_by_stage, total_usd

    run = load_run(config.path(config.project.runs_dir), run_id)
    service = total_usd(spend_by_stage(config.path(config.service.cache_path), run.run_id))
    hours = sum(it.seconds for it in run.state.iterations) / 3600 if run.state else 0.0  # every iteration ran on the GPU
    return service + hours * gpu_hourly_usd, f"run {run_id}: ${service:.2f} service spend + {hours:.2f} GPU h"


def build_projection(
    config: Any,
    *,
    preset: str | None = None,
    service_model: str | None = None,
    requests_per_month: float | None = None,
    input_tokens: float | None = None,
    output_tokens: float | None = None,
    gpu_hourly_usd: float | None = None,
    throughput_tps: float | None = None,
    utilisation: float | None = None,
    on_demand: bool = False,
    one_off_usd: float | None = None,
    run_id: str | None = None,
    months: int = 12,
    tokenizer: str | None = None,
) -> tuple[Projection, list[str]]:
    """Fill each input from (in order) the given value, the run or the coverage data, then the preset; return notes on the sources."""
    if one_off_usd is not None:
        _positive("one-off cost", one_off_usd)  # a given zero is a forgotten cost; leave it out to take the run's or the preset's
    base = PRESETS.get(preset) if preset else None
    if preset and base is None:
        raise LlamaduoError(f"no cost preset {preset!r}", f"Pick one of: {', '.join(PRESETS)}")
    notes: list[str] = [f"preset {preset}: {base.description}"] if base else []
    model = service_model or (base.service_model if base else config.service.generator.model)
    if input_tokens is None or output_tokens is None:
        if base is not None:
            input_tokens = base.workload.input_tokens if input_tokens is None else input_tokens
            output_tokens = base.workload.output_tokens if output_tokens is None else output_tokens
            source = base.workload.source
        else:
            measured_in, measured_out, n = token_profile(config, tokenizer=tokenizer)
            input_tokens = measured_in if input_tokens is None else input_tokens
            output_tokens = measured_out if output_tokens is None else output_tokens
            source = f"coverage data, {n} examples"
    else:
        source = "given"
    if requests_per_month is None:
        if base is None:
            raise LlamaduoError("the request volume is missing", "Pass --requests-per-month or --preset light|heavy")
        requests_per_month = base.workload.requests_per_month
    if gpu_hourly_usd is None:
        if base is None:
            raise LlamaduoError("the GPU price is missing", "Pass --gpu-hourly (USD per GPU hour) or --preset light|heavy")
        gpu_hourly_usd = base.local.gpu_hourly_usd
    if throughput_tps is None and run_id is not None:
        from llamaduo.report.loader import run_root

        throughput_tps = measured_throughput(run_root(config.path(config.project.runs_dir), run_id))
        if throughput_tps is not None:
            notes.append(f"throughput measured in run {run_id}: {throughput_tps:.1f} tok/s (measured on this machine, unbatched)")
    if throughput_tps is None:
        if base is None:
            raise LlamaduoError("the local throughput is missing", "Pass --throughput (generated tokens/s per GPU) or --preset light|heavy")
        throughput_tps = base.local.throughput_tps
    if one_off_usd is None and run_id is not None:
        _positive("GPU hourly price", gpu_hourly_usd)
        one_off_usd, note = run_one_off(config, run_id, gpu_hourly_usd)
        notes.append(f"one-off cost from {note}")
    if one_off_usd is None:
        one_off_usd = base.local.one_off_usd if base else 0.0
    workload = Workload(requests_per_month=requests_per_month, input_tokens=input_tokens, output_tokens=output_tokens, source=source)
    local = LocalHosting(gpu_hourly_usd=gpu_hourly_usd, throughput_tps=throughput_tps,
                        utilisation=utilisation if utilisation is not None else (base.local.utilisation if base else 0.5),
                        always_on=not on_demand, one_off_usd=one_off_usd)
    return project(model, workload, local, months=months, prices=config.service.prices), notes
