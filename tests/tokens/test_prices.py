"""Prices: the packaged table, snapshots, operator overrides, no invented prices; the public names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from code_interpreter import tokens
from code_interpreter.errors import ConfigurationError
from code_interpreter.tokens import PriceTable


def test_estimate_cost_uses_per_million_prices() -> None:
    assert tokens.estimate_cost("gpt-4o", 1_000_000) == pytest.approx(2.5)
    assert tokens.estimate_cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    # Cached tokens are the cached part of the input (as in usage.prompt_tokens_details).
    assert tokens.estimate_cost("gpt-4o", 1_000_000, 0, 1_000_000) == pytest.approx(1.25)
    assert tokens.estimate_cost("gpt-4o-mini", 2000, 1000) == pytest.approx((2000 * 0.15 + 1000 * 0.6) / 1e6)
    # A model without a cached discount bills cached tokens as input.
    assert tokens.estimate_cost("gpt-4-turbo", 1000, 0, 1000) == tokens.estimate_cost("gpt-4-turbo", 1000)


def test_snapshots_and_prefixes() -> None:
    assert tokens.estimate_cost("gpt-4o-2024-08-06", 10**6) == pytest.approx(2.5)
    assert tokens.estimate_cost("gpt-4o-2024-05-13", 10**6) == pytest.approx(5.0)  # its own entry
    assert tokens.estimate_cost("openai/gpt-4.1-mini", 10**6) == pytest.approx(0.4)
    assert tokens.estimate_cost("gpt-4-0613", 10**6) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "model", ["gpt-4o-audio-preview", "brand-new-model", "ft:gpt-4o-mini-2024-07-18:org::x"]
)
def test_unknown_models_have_no_invented_price(model: str) -> None:
    with pytest.raises(ValueError, match="no price"):
        tokens.estimate_cost(model, 100)


@pytest.mark.parametrize(
    ("args", "match"), [((-1,), "input_tokens"), ((10, -1), "output_tokens"), ((10, 0, 11), "cannot exceed")]
)
def test_bad_counts(args: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tokens.estimate_cost("gpt-4o", *args)


def test_operator_file_overrides_entries(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(
        json.dumps(
            {
                "source": "our contract",
                "as_of": "2026-12-01",
                "models": {
                    "gpt-4o": {"input": 1.0, "cached_input": 0.5, "output": 4.0},
                    "ft:gpt-4o-mini-2024-07-18:org::x": {"input": 0.3, "cached_input": None, "output": 1.2},
                },
            }
        )
    )
    table = PriceTable.load(f)
    assert table.price_for("gpt-4o").input == 1.0  # type: ignore[union-attr]
    assert table.price_for("gpt-4o-mini").input == 0.15  # type: ignore[union-attr]  # packaged entry kept
    assert table.price_for("ft:gpt-4o-mini-2024-07-18:org::x") is not None
    assert "our contract" in table.source and table.as_of == "2026-12-01"


@pytest.mark.parametrize("content", ["{not json", '{"models": {"x": {"input": "cheap"}}}', '{"models": []}'])
def test_malformed_operator_file(tmp_path: Path, content: str) -> None:
    f = tmp_path / "prices.json"
    f.write_text(content)
    with pytest.raises(ConfigurationError, match="price file"):
        PriceTable.load(f)
    with pytest.raises(ConfigurationError):
        PriceTable.load(tmp_path / "missing.json")


async def test_counter_uses_the_operator_file(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(
        json.dumps(
            {
                "source": "ours",
                "as_of": "2026-12-01",
                "models": {"gpt-4o": {"input": 100.0, "cached_input": None, "output": 100.0}},
            }
        )
    )
    est = await tokens.TokenCounter(image_hosts=(), prices_file=f).estimate("gpt-4o", "hi")
    assert est.cost_min_usd == pytest.approx(est.input_tokens * 100 / 1e6)
    assert est.price_date == "2026-12-01"


def test_packaged_table_has_source_and_date() -> None:
    table = PriceTable.load()
    assert table.source.startswith("https://openai.com/api/pricing") and table.as_of
    for name in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
    ):
        assert table.price_for(name) is not None
