"""Model prices: the table shipped in prices.json, overridden by `service.prices`, and the cost of one usage."""

from __future__ import annotations

import functools
import json
import logging
from importlib import resources

from llamaduo.service.config import Price
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


def price_or_warn(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    """Like find_price, but an unknown model logs one warning (its calls are then counted at $0)."""
    price = find_price(model, overrides)
    if price is None and model not in _warned:
        _warned.add(model)
        log.warning("no price known for model %s; its cost is counted as $0 (set service.prices.%s to fix)", model, model)
    return price
