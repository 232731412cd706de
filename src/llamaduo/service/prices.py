"""Model prices: the table shipped in prices.json, overridden by `service.prices`, and the cost of one usage."""

from __future__ import annotations

import functools
import json
import logging
from importlib import resources
from typing import Any

from llamaduo.errors import ConfigError
from llamaduo.service.config import Price, ServiceModel
from llamaduo.service.types import Usage

log = logging.getLogger(__name__)
_warned: set[str] = set()


@functools.cache
def shipped_prices() -> dict[str, Price]:
    raw = json.loads(resources.files("llamaduo.service").joinpath("prices.json").read_text(encoding="utf-8"))
    return {name: Price.model_validate(row) for name, row in raw["models"].items()}


def _bare(model: str) -> str:
    """`openai/gpt-4o` (OpenRouter) and `models/gemini-2.5-flash` (Gemini) name the same priced model."""
    return model.rsplit("/", 1)[-1].lower()


def find_price(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    """Exact id first (overrides, then the table); else the longest table entry that is a dash-bounded prefix.

    Prefix matching prices dated snapshots (`gpt-4o-mini-2024-07-18`) like their family.
    """
    overrides = overrides or {}
    for table in (overrides, shipped_prices()):
        for name in (model, _bare(model)):
            if name in table:
                return table[name]
    bare = _bare(model)
    best: tuple[int, Price] | None = None
    for table in (overrides, shipped_prices()):
        for name, price in table.items():
            stem = name.lower()
            if bare.startswith(stem) and (len(bare) == len(stem) or bare[len(stem)] in "-@:.") and (best is None or len(stem) > best[0]):
                best = (len(stem), price)
        if best:
            return best[1]
    return None


def cost_usd(usage: Usage, price: Price | None, *, batch: bool = False) -> float:
    """Dollars for one usage; cached input tokens bill at the cached price, batch jobs at the discount."""
    if price is None:
        return 0.0
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    cached_price = price.input if price.cached_input is None else price.cached_input
    total = (fresh * price.input + cached * cached_price + usage.output_tokens * price.output) / 1e6
    return total * price.batch_discount if batch else total


FREE = Price(input=0.0, output=0.0)
"""The price of a model marked `free: true` (one you host yourself)."""


def price_for(model: ServiceModel, overrides: dict[str, Price] | None = None, *, label: str = "this role") -> Price | None:
    """The role's price: free models cost nothing; an unknown model logs one warning and its ledger rows say `priced: false`."""
    if model.free:
        return FREE
    price = find_price(model.model, overrides)
    if price is None and model.model not in _warned:
        _warned.add(model.model)
        log.warning("no price known for model %s (%s): its spend is recorded as unpriced, not counted in dollars; "
                    "set service.prices.%s, or free: true on the role if it costs nothing", model.model, label, model.model)
    return price


def unpriced_roles(config: Any) -> list[tuple[str, str]]:
    """(config path, model id) of every role whose model has no price and is not marked free."""
    roles = [("service.generator", config.service.generator)]
    roles += [(f"service.judge.{i}", judge) for i, judge in enumerate(config.service.judge)]
    return [(path, m.model) for path, m in roles if not m.free and find_price(m.model, config.service.prices) is None]


def check_priced(config: Any) -> None:
    """With a budget set, every role must be priced (or marked free): a budget cannot bind on spend it cannot count."""
    if config.service.budget_usd is None:
        return
    missing = unpriced_roles(config)
    if missing:
        raise unpriced_error(*missing[0], others=[p for p, _ in missing[1:]])


def unpriced_error(path: str, model: str, *, others: list[str] | None = None) -> ConfigError:
    more = f" (and {', '.join(others)})" if others else ""
    return ConfigError(
        f"{path} uses model {model}, which has no known price{more}, so service.budget_usd cannot bind on its spend",
        f"Set service.prices.{model} (USD per million input/output tokens), or `free: true` on the role if it costs nothing.",
    )
