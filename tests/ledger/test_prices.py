"""Compute prices: dated defaults with their source, the cost of one execution, the operator's file."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from code_interpreter.errors import ConfigurationError
from code_interpreter.ledger import ComputePrices, ExecutionUsage, default_compute_prices, price_execution
from code_interpreter.tokens import PriceTable


def test_the_defaults_are_dated_and_cite_their_source() -> None:
    p = ComputePrices.load()
    assert "e2b.dev/pricing" in p.source and "aws.amazon.com/ebs/pricing" in p.source
    assert date.fromisoformat(p.as_of)
    # E2B's own worked example: 8 vCPU and 4 GB of RAM cost $0.468 per hour.
    full_hour = p.cost(
        cpu_seconds=8 * 3600, peak_memory_mb=4096, wall_seconds=3600, stored_bytes=0, storage_hours=48
    )
    assert full_hour.total_usd == pytest.approx(0.468)
    assert (p.cpu_hour_usd, p.memory_gb_hour_usd, p.storage_gb_month_usd) == (0.0504, 0.0162, 0.08)


def test_cost_of_one_execution_by_resource() -> None:
    p = ComputePrices(cpu_hour_usd=3.6, memory_gb_hour_usd=7.2, storage_gb_month_usd=73.0)
    c = p.cost(cpu_seconds=2.0, peak_memory_mb=512, wall_seconds=10.0, stored_bytes=2**30, storage_hours=48)
    assert c.cpu_usd == pytest.approx(3.6 * 2 / 3600)  # CPU time used, not wall time
    assert c.memory_usd == pytest.approx(7.2 * 0.5 * 10 / 3600)  # peak GiB held for the wall time
    assert c.storage_usd == pytest.approx(73.0 * 48 / 730)  # pro rata for the 48 h the store keeps it
    assert c.total_usd == pytest.approx(c.cpu_usd + c.memory_usd + c.storage_usd)
    forever = p.cost(cpu_seconds=0, peak_memory_mb=0, wall_seconds=0, stored_bytes=2**30, storage_hours=None)
    assert forever.storage_usd == pytest.approx(73.0)  # kept forever: one month is charged
    assert c.to_dict()["total_usd"] == pytest.approx(c.total_usd)


def test_price_execution_uses_the_file_lifetime() -> None:
    usage = ExecutionUsage(
        user_id=1, cpu_seconds=1.0, peak_memory_mb=100, wall_seconds=1.0, stored_bytes=10**6
    )
    p = ComputePrices(cpu_hour_usd=1.0, memory_gb_hour_usd=1.0, storage_gb_month_usd=1.0)
    short = price_execution(usage, p, storage_hours=1)
    long = price_execution(usage, p, storage_hours=730)
    assert usage.cost_usd is None  # the measured record is not changed
    assert short.cost is not None and long.cost is not None
    assert long.cost.storage_usd == pytest.approx(short.cost.storage_usd * 730)
    assert price_execution(usage).cost_usd == pytest.approx(
        price_execution(usage, default_compute_prices(), storage_hours=48).cost_usd
    )


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    return path


def test_the_operator_file_overrides_some_prices(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "source": "our cluster",
            "as_of": "2026-12-01",
            "models": {"our-model": {"input": 1, "cached_input": None, "output": 2}},
            "compute": {"cpu_hour": 0.02},
        },
    )
    p = ComputePrices.load(path)
    assert p.cpu_hour_usd == 0.02 and p.memory_gb_hour_usd == 0.0162  # the rest stay the defaults
    assert p.as_of == "2026-12-01" and "our cluster" in p.source and str(path) in p.source
    tokens = PriceTable.load(path)  # the same file still prices tokens
    assert tokens.price_for("our-model") is not None


def test_a_file_of_compute_prices_only_is_accepted_by_both_tables(tmp_path: Path) -> None:
    path = _write(tmp_path, {"compute": {"cpu_hour": 1, "memory_gb_hour": 2, "storage_gb_month": 3}})
    assert ComputePrices.load(path).storage_gb_month_usd == 3.0
    tokens = PriceTable.load(path)
    assert tokens.price_for("gpt-4o") is not None and "operator file" not in tokens.source


def test_the_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, {"compute": {"memory_gb_hour": 0.5}})
    monkeypatch.setenv("CODE_INTERPRETER_PRICES_FILE", str(path))
    assert default_compute_prices().memory_gb_hour_usd == 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"compute": {"cpu_hour": -1}}, "non-negative"),
        ({"compute": {"cpu_hour": "cheap"}}, "non-negative number"),
        ({"compute": {"gpu_hour": 1}}, "unknown compute price"),
        ({"compute": [1, 2]}, "expected"),
    ],
)
def test_a_malformed_compute_section_says_what_is_expected(
    tmp_path: Path, data: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ComputePrices.load(_write(tmp_path, data))


def test_an_unreadable_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CODE_INTERPRETER_PRICES_FILE"):
        ComputePrices.load(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match=">= 0"):
        ComputePrices(cpu_hour_usd=-1, memory_gb_hour_usd=0, storage_gb_month_usd=0)
