"""The cost projection: service bill against local hosting, the break-even month, presets and `llamaduo cost --project`."""

from __future__ import annotations

import json
import math

import pytest

from llamaduo.data.store import DatasetStore
from llamaduo.errors import LlamaduoError
from llamaduo.records import Example, Message
from llamaduo.report.costs import PRESETS, LocalHosting, Workload, build_projection, project, token_profile
from llamaduo.runs import RunFolder
from llamaduo.service.config import Price
from llamaduo.service.prices import find_price
from tests.report.runfixture import project_config


def test_light_preset_breaks_even_in_month_two():
    light = PRESETS["light"]
    p = project(light.service_model, light.workload, light.local)
    price = find_price("gpt-4o")  # the service layer's shipped table
    expected_service = 300_000 * (500 * price.input + 250 * price.output) / 1e6
    assert p.service_monthly_usd == pytest.approx(expected_service)
    assert p.gpus == 1 and p.local_monthly_usd == pytest.approx(730 * 1.00)
    assert p.break_even_exact == pytest.approx(500 / (expected_service - 730))
    assert p.break_even_month == math.ceil(p.break_even_exact)
    # The month of break-even is the first one whose cumulative local cost is below the service's.
    crossed = next(m for m, (s, loc) in enumerate(zip(p.service_cumulative, p.local_cumulative, strict=True), 1) if loc < s)
    assert crossed == p.break_even_month
    assert p.service_total_usd == pytest.approx(12 * expected_service)
    assert p.savings_usd == pytest.approx(p.service_total_usd - p.local_total_usd)


def test_heavy_load_needs_more_gpus_and_on_demand_bills_busy_hours():
    heavy = PRESETS["heavy"]
    p = project(heavy.service_model, heavy.workload, heavy.local)
    rate = 1_500_000 * 500 / (730 * 3600)  # generated tokens per second, on average
    assert p.gpus == math.ceil(rate / (400 * 0.5)) == 2
    on_demand = project(heavy.service_model, heavy.workload, heavy.local.model_copy(update={"always_on": False}))
    assert on_demand.gpu_hours_per_month == pytest.approx(1_500_000 * 500 / (400 * 0.5) / 3600)
    assert on_demand.local_monthly_usd < p.local_monthly_usd


def test_no_break_even_when_local_costs_more():
    w = Workload(requests_per_month=1000, input_tokens=100, output_tokens=100)
    p = project("gpt-4o-mini", w, LocalHosting(gpu_hourly_usd=4.0, throughput_tps=50, one_off_usd=10))
    assert p.break_even_month is None and p.break_even_exact is None and p.savings_usd < 0
    assert "no break-even" in p.summary_lines()[-1]


def test_price_override_from_config_wins():
    w = Workload(requests_per_month=1e6, input_tokens=1000, output_tokens=0.001)
    p = project("gpt-4o", w, LocalHosting(gpu_hourly_usd=1, throughput_tps=100), prices={"gpt-4o": Price(input=1.0, output=1.0)})
    assert p.service_monthly_usd == pytest.approx(1e6 * (1000 + 0.001) / 1e6)
    with pytest.raises(LlamaduoError, match="no price known for service model mystery-llm"):
        project("mystery-llm", w, LocalHosting(gpu_hourly_usd=1, throughput_tps=100))


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("gpu_hourly_usd", 0, "GPU hourly price is 0"), ("gpu_hourly_usd", -2, "GPU hourly price is -2"),
    ("throughput_tps", 0, "throughput is 0"), ("utilisation", 1.5, "utilisation is 1.5"),
    ("one_off_usd", -1, "one-off cost is -1"), ("requests_per_month", 0, "requests per month is 0"),
    ("output_tokens", -5, "output tokens is -5"), ("gpu_hourly_usd", float("nan"), "GPU hourly price is nan"),
])
def test_zero_and_negative_inputs_are_rejected(field, value, needle):
    w = Workload(requests_per_month=1000, input_tokens=100, output_tokens=100)
    local = LocalHosting(gpu_hourly_usd=1, throughput_tps=100)
    if field in Workload.model_fields:
        w = w.model_copy(update={field: value})
    else:
        local = local.model_copy(update={field: value})
    with pytest.raises(LlamaduoError, match=needle) as err:
        project("gpt-4o", w, local)
    assert "\n" not in err.value.message


def test_token_profile_is_measured_on_the_coverage_data(tmp_path):
    config = project_config(tmp_path)
    store = DatasetStore(config.path(config.data.store))
    rows = [Example(id=f"e{i}", task="qa", messages=[Message(role="user", content="one two three four"),
                                                      Message(role="assistant", content="a b" if i else "a b c d e f")]) for i in range(2)]
    store.write("train", rows, stage="test")
    prompt, answer, n = token_profile(config)
    assert (prompt, answer, n) == (4.0, 4.0, 2)
    projection, _ = build_projection(config, requests_per_month=1000, gpu_hourly_usd=1, throughput_tps=100)
    assert projection.workload.source == "coverage data, 2 examples" and projection.workload.output_tokens == 4.0


def test_cli_preset_prints_and_plots_a_break_even(tmp_path, cli):
    project_config(tmp_path)
    code, out, err = cli("cost", "--preset", "light", "--plot", "fig4.png", cwd=tmp_path)
    assert code == 0, err
    assert "break-even after month 2" in out and "12-month totals" in out
    assert (tmp_path / "fig4.png").read_bytes().startswith(b"\x89PNG")
    code, out, _ = cli("cost", "--preset", "heavy", "--gpu-hourly", "2.5", "--json", cwd=tmp_path)
    data = json.loads(out)["projection"]
    assert code == 0 and data["local"]["gpu_hourly_usd"] == 2.5 and data["gpus"] == 2


@pytest.mark.parametrize("args", [["--preset", "light", "--gpu-hourly", "0"], ["--preset", "heavy", "--throughput", "-3"],
                                  ["--project", "--preset", "light", "--one-off", "0"], ["--preset", "medium"],
                                  ["--project", "--requests-per-month", "10", "--input-tokens", "5", "--output-tokens", "5"]])
def test_cli_bad_cost_inputs_are_one_line_exit_2(tmp_path, cli, args):
    project_config(tmp_path)
    code, out, err = cli("cost", *args, cwd=tmp_path)
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0, err


def test_cli_projection_takes_one_off_and_throughput_from_a_run(tmp_path, cli):
    from tests.report.runfixture import make_run

    config = project_config(tmp_path)
    root = make_run(config, "paid", iterations=2, n=3)
    RunFolder(root).event("train_metrics", iteration=2, tokens_per_s=9999.0)  # training speed is not serving speed
    RunFolder(root).event("infer_finished", iteration=2, tokens_per_s=123.0)
    code, out, err = cli("cost", "--project", "--run", "paid", "--requests-per-month", "50000", "--input-tokens", "300",
                         "--output-tokens", "200", "--gpu-hourly", "2", "--json", cwd=tmp_path)
    assert code == 0, err
    data = json.loads(out)
    hours = (20.0 + 61.0 + 62.0) / 3600  # the base model's evaluation and the two iterations' recorded seconds
    assert data["projection"]["local"]["one_off_usd"] == pytest.approx(1.253 + hours * 2)
    assert data["projection"]["local"]["throughput_tps"] == 123.0
    assert any("measured in run paid" in n for n in data["notes"])
