"""The model card written beside every export: what it is, how it scored, what it was trained on, under which licenses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

KNOWN_BASE_LICENSES = {"HuggingFaceTB/SmolLM2": "apache-2.0", "Qwen/Qwen2.5": "apache-2.0", "meta-llama/": "llama3", "google/gemma": "gemma"}


def _manifest(run_root: Path) -> dict[str, Any]:
    path = run_root / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def base_license(base_model: str) -> str:
    for prefix, license_id in KNOWN_BASE_LICENSES.items():
        if base_model.startswith(prefix):
            return license_id
    return "unknown (see the base model's card)"


def data_licenses(sources: list[dict[str, Any]], base: Path) -> list[tuple[str, str]]:
    """(source path, license) from the SOURCE.txt beside each data source, as ../shared/data lays them out."""
    found = []
    for source in sources:
        path = Path(source.get("path", ""))
        path = path if path.is_absolute() else base / path
        license_text = "not recorded"
        for folder in [path.parent, path] if path.suffix else [path]:
            info = folder / "SOURCE.txt"
            if info.is_file():
                match = re.search(r"licen[cs]e\s*[:=]?\s*(.+)", info.read_text(encoding="utf-8", errors="replace"), re.IGNORECASE)
                license_text = match.group(1).strip() if match else "see SOURCE.txt"
                break
        found.append((str(source.get("path")), license_text))
    return found


def eval_results(run_root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Each evaluation report of the run (eval/iter-*/report.json), newest last."""
    reports = []
    for path in sorted(run_root.glob("eval/*/report.json")):
        try:
            reports.append((path.parent.name, json.loads(path.read_text(encoding="utf-8"))))
        except json.JSONDecodeError:
            continue
    return reports


def _scalars(data: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or isinstance(value, (int, float)):
            rows.append((name, round(value, 4) if isinstance(value, float) else value))
        elif isinstance(value, dict) and depth < 2:
            rows.extend(_scalars(value, f"{name}.", depth + 1))
    return rows


def service_spend(config: Any, run_id: str) -> list[str]:
    """The run's service-LLM spend per iteration, from the project's ledger."""
    from llamaduo.report.spend import spend_by_stage, usd

    rows = spend_by_stage(config.path(config.service.cache_path), run_id)
    lines = ["## Service-LLM spend", ""]
    if not rows:
        return lines + ["The service ledger holds no calls for this run.", ""]
    per: dict[int | None, list[Any]] = {}
    for r in rows:
        per.setdefault(r.iteration, []).append(r)
    lines += ["| iteration | requests | USD |", "|---|---|---|"]
    for k in sorted(per, key=lambda i: (i is None, i or 0)):
        group = per[k]
        lines.append(f"| {'outside the loop' if k is None else k} | {sum(r.requests for r in group)} |"
                     f" {usd(sum(r.cost_usd for r in group), sum(r.unpriced_requests for r in group))} |")
    lines.append(f"| total | {sum(r.requests for r in rows)} | {usd(sum(r.cost_usd for r in rows), sum(r.unpriced_requests for r in rows))} |")
    return [*lines, "", "From the service ledger: an iteration's spend is the synthetic data it trained on and its evaluation.", ""]


def model_card(config: Any, run_root: Path, merged: Path, result: Any) -> str:
    manifest = _manifest(run_root)
    run_config = manifest.get("config") or config.redacted()
    base_model = (run_config.get("train") or {}).get("base_model") or config.train.base_model
    sources = (run_config.get("data") or {}).get("sources") or []
    license_id = base_license(base_model)
    front = {"license": license_id.split(" ")[0], "base_model": base_model, "library_name": "transformers" if result.format == "safetensors" else "gguf",
             "tags": ["llamaduo", result.format] + ([result.quantization] if result.quantization else [])}
    p = result.parity
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {run_root.name} ({result.format}{' ' + result.quantization if result.quantization else ''})", "",
        f"Fine-tuned from `{base_model}` by llamaduo (project `{config.project.name}`), exported from `{merged}`.", "",
        "## Files", "", "| file | sha256 |", "|---|---|",
        *[f"| {name} | `{digest[:16]}…` |" for name, digest in result.files.items()], "",
        "## Parity with the checkpoint", "",
        f"Greedy answers to {p.prompts} {result.prompts_source}, exported artifact vs the merged checkpoint.", "",
        "| check | result |", "|---|---|",
        f"| rendered prompt tokens identical | {p.prompt_tokens_equal}/{p.prompts} |",
        f"| stop tokens missing | {', '.join(p.stop_tokens_missing) or 'none'} |",
        f"| stop behaviour agreement | {p.stop_agreement:.2f} |",
        f"| mean token F1 | {p.mean_token_f1:.3f} (tolerance {p.tolerance}) |",
        f"| mean ROUGE-L | {p.mean_rouge_l:.3f} |",
        f"| exact match | {p.exact_match:.2f} |",
        f"| verdict | {'passed' if p.passed else 'FAILED: ' + str(p.cause)} |", "",
        "## Evaluation results", "",
    ]
    reports = eval_results(run_root)
    if reports:
        for name, report in reports:
            # Spend is shown once, from the ledger, below: an eval report's own cost_usd counts only its new judge calls.
            shown = [(k, v) for k, v in _scalars(report) if k != "cost_usd"][:40]
            lines += [f"### {name}", "", "| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in shown], ""]
    else:
        lines += ["This run has no evaluation report yet (`llamaduo eval`).", ""]
    lines += service_spend(config, run_root.name)
    lines += ["## Data lineage", ""]
    hashes = manifest.get("data_hashes") or {}
    lines += [f"- `{k}`: `{v}`" for k, v in hashes.items()] or ["- no dataset hashes recorded in the run manifest"]
    lines += [f"- run created {manifest.get('created_at', 'unknown')}, llamaduo {manifest.get('llamaduo_version', '?')}, git {manifest.get('git_sha') or 'unknown'}", ""]
    lines += ["## Licenses", "", f"- base model `{base_model}`: {license_id}"]
    lines += [f"- data `{path}`: {lic}" for path, lic in data_licenses(sources, config.workdir)] or ["- data sources: none recorded"]
    lines += ["", "Check that the licenses of the base model and of every data source allow your use."]
    return "\n".join(lines) + "\n"
