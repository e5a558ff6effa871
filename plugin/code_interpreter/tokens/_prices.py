"""Prices per 1M tokens (input, cached input, output) from a data file with its source and date.

The packaged table is ``data/prices.json``; an operator's file (``Settings.prices_file`` /
``CODE_INTERPRETER_PRICES_FILE``, same shape) replaces entries per model; it may also carry the
sandbox's prices in a ``compute`` section (:mod:`code_interpreter.ledger`), or only those. A model
with no entry has no price: callers get None and a warning, never an invented figure.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..ledger._prices import read_price_files
from ._encoding import normalize_model

__all__ = ["ModelPrice", "PriceTable", "default_prices", "estimate_cost"]

# A dated snapshot suffix: gpt-4o-2024-08-06, gpt-4-0613, o3-mini-2025-01-31.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens for one model."""

    model: str
    """The table entry that matched."""
    input: float
    """Uncached input tokens."""
    cached_input: float | None
    """Cached input tokens (None: no discount, billed as input)."""
    output: float
    """Output tokens (reasoning tokens included)."""

    def cost(self, input_tokens: int, output_tokens: int = 0, cached_input_tokens: int = 0) -> float:
        """USD for a request; ``cached_input_tokens`` is the cached part of ``input_tokens``."""
        cached_rate = self.input if self.cached_input is None else self.cached_input
        uncached = input_tokens - cached_input_tokens
        return (uncached * self.input + cached_input_tokens * cached_rate + output_tokens * self.output) / 1e6

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return asdict(self)


class PriceTable:
    """Model prices with their source and date."""

    def __init__(self, models: dict[str, ModelPrice], source: str, as_of: str) -> None:
        self.models = models
        self.source = source
        self.as_of = as_of

    @classmethod
    def load(cls, override: Path | str | None = None) -> PriceTable:
        """The packaged table, with ``override``'s entries (and source/date) on top.

        Raises:
            ConfigurationError: the override file is missing or malformed.
        """
        packaged, data, path = read_price_files("prices.json", override)
        models = _entries(packaged, "data/prices.json")
        source, as_of = str(packaged["source"]), str(packaged["as_of"])
        if path is not None:
            if isinstance(data, dict) and "models" not in data and "compute" in data:
                return cls(models, source, as_of)  # a file of compute prices only (code_interpreter.ledger)
            models.update(_entries(data, str(path)))
            source = f"{data.get('source', path)} (operator file {path}) over {source}"
            as_of = str(data.get("as_of", as_of))
        return cls(models, source, as_of)

    def price_for(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (exact name, else its undated base for a dated snapshot), or None."""
        name = normalize_model(model)
        if name.startswith("ft:"):  # fine-tunes are priced differently: only an explicit entry counts
            return self.models.get(name)
        hit = self.models.get(name)
        if hit is None and _SNAPSHOT.search(name):
            hit = self.models.get(_SNAPSHOT.sub("", name))
        return hit


def _entries(data: Any, where: str) -> dict[str, ModelPrice]:
    try:
        out = {}
        for name, e in data["models"].items():
            cached = e.get("cached_input")
            out[name] = ModelPrice(
                name, float(e["input"]), None if cached is None else float(cached), float(e["output"])
            )
            if min(out[name].input, out[name].output) < 0:
                raise ValueError("negative price")
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(
            f"price file {where}: expected {{'models': {{name: {{'input', 'cached_input', 'output'}}}}}} "
            f"in USD per 1M tokens ({type(exc).__name__}: {exc})"
        ) from exc


@lru_cache(maxsize=8)
def _load_cached(override: str | None) -> PriceTable:
    return PriceTable.load(override)


def default_prices(override: Path | str | None = None) -> PriceTable:
    """The packaged prices, under ``override`` or ``$CODE_INTERPRETER_PRICES_FILE`` when set."""
    chosen = override if override is not None else os.environ.get("CODE_INTERPRETER_PRICES_FILE") or None
    return _load_cached(str(chosen) if chosen is not None else None)


def estimate_cost(
    model: str, input_tokens: int, output_tokens: int = 0, cached_input_tokens: int = 0
) -> float:
    """USD for a request (``cached_input_tokens`` is the cached part of ``input_tokens``, as in usage).

    Raises:
        ValueError: negative counts, more cached than input tokens, or a model with no price.
    """
    for label, v in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cached_input_tokens", cached_input_tokens),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{label} must be a non-negative int, got {v!r}")
    if cached_input_tokens > input_tokens:
        raise ValueError("cached_input_tokens is part of input_tokens and cannot exceed it")
    table = default_prices()
    price = table.price_for(model)
    if price is None:
        raise ValueError(
            f"no price for model {model!r} in {table.source}; add it to a prices file "
            "(CODE_INTERPRETER_PRICES_FILE) — prices are never guessed"
        )
    return price.cost(input_tokens, output_tokens, cached_input_tokens)
