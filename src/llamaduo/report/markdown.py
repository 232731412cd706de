"""The Markdown summary of a run: the metrics table, target verdicts, failures and spend (no model text, which stays in the HTML)."""

from __future__ import annotations

from llamaduo.report import view
from llamaduo.report.loader import RunData
from llamaduo.report.spend import SpendRow, total_usd, unpriced, usd


def _cell(text: object) -> str:
    # Table cells: a pipe or newline would break the row; angle brackets could become HTML in a renderer.
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(run: RunData, spend: list[SpendRow]) -> str:
    lines = [f"# Run {run.run_id}", "", f"Status: **{run.status}**"]
    if run.state and run.state.best_iteration is not None:
        lines.append(f"Best iteration: {run.state.best_iteration}")
    lines += ["", *[f"> {_cell(n)}" for n in run.notices]]
    table = view.metrics_table(run, spend)
    lines += ["", "## Metrics per iteration", ""]
    if table["rows"]:
        header = ["model", "train", "synthetic total", *[f"{c} [95% CI]" for c in table["columns"]], "target", "spend (USD)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table["rows"]:
            cells = [row["label"] + (" (best)" if row["best"] else ""), row["train_size"], row["synthetic_total"],
                     *[f"{c['value']} {c['ci']}".strip() for c in row["cells"]], row["target"], row["spend"]]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        verdicts = [(r["label"], r["explanation"]) for r in table["rows"] if r["explanation"]]
        lines += ["", *[f"- {label}: {_cell(text)}" for label, text in verdicts]]
    else:
        lines.append("No evaluated model yet.")
    failures = [f for s in ([run.baseline] if run.baseline else []) + run.iterations if (f := view.failures(s))]
    if failures:
        lines += ["", "## Judge failures", ""]
        lines += [f"- {f['label']}: {f['judgments']} of {f['total']} judgments failed; {f['unscored']} answers unscored"
                  + (f" ({', '.join(f'{k}: {v}' for k, v in f['by_reason'].items())})" if f["by_reason"] else "") for f in failures]
    gates = [(view.gate_label(s), g) for s in ([run.baseline] if run.baseline else []) + run.iterations if (g := view.gate_report(s))]
    if gates:
        lines += ["", "## Synthetic data gates", ""]
        for label, rows in gates:
            lines.append(f"- {label}: " + "; ".join(f"{_cell(k)} = {_cell(v)}" for k, v in rows.items()))
    lines += ["", "## Spend by iteration, stage, role and model (service ledger)", ""]
    if spend:
        lines += ["| iteration | stage | role | model | requests | input tokens | output tokens | USD |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {'–' if r.iteration is None else r.iteration} | {_cell(r.stage)} | {_cell(r.role)} | {_cell(r.model)} | {r.requests} |"
                  f" {r.input_tokens} | {r.output_tokens} | {usd(r.cost_usd, r.unpriced_requests)} |" for r in spend]
        lines.append(f"| total | | | | | | | {usd(total_usd(spend), unpriced(spend))} |")
    else:
        lines.append("No service calls recorded for this run.")
    return "\n".join(lines).rstrip() + "\n"
