"""ExecutionUsage: validated measures, its links, its cost, and the shape result["usage"] carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from code_interpreter.ledger import ComputePrices, ExecutionLink, ExecutionUsage, current_link, linked

PRICES = ComputePrices(cpu_hour_usd=3.6, memory_gb_hour_usd=0.0, storage_gb_month_usd=0.0)


def test_to_dict_is_what_a_result_carries() -> None:
    u = ExecutionUsage(user_id=7, cpu_seconds=1.5, peak_memory_mb=300.0, wall_seconds=2.0, stored_bytes=1234)
    d = u.priced(PRICES, 48).to_dict()
    # The minimum for result["usage"], JSON-ready.
    for key in ("cpu_seconds", "peak_memory_mb", "wall_seconds", "stored_bytes", "cost_usd"):
        assert key in d
    assert d["cost_usd"] == pytest.approx(3.6 * 1.5 / 3600)
    assert d["cost"]["cpu_usd"] == pytest.approx(d["cost_usd"])
    json.dumps(d)
    assert u.cost_usd is None and u.to_dict()["cost"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpu_seconds", -0.1),
        ("peak_memory_mb", float("nan")),
        ("wall_seconds", float("inf")),
        ("stored_bytes", 1.5),
        ("stored_bytes", -1),
        ("result_tokens", -3),
        ("user_id", None),
    ],
)
def test_bad_measures_are_refused(field: str, value: object) -> None:
    values: dict[str, object] = {"user_id": 1, "cpu_seconds": 0.0, "peak_memory_mb": 0.0, "wall_seconds": 0.0}
    values[field] = value
    with pytest.raises(ValueError, match=field):
        ExecutionUsage(**values)  # type: ignore[arg-type]


def test_links_fill_only_what_is_missing() -> None:
    now = datetime(2026, 12, 1, 10, tzinfo=UTC)
    link = ExecutionLink(tool_call_id="call_1", request_id="req_1")
    bare = ExecutionUsage(user_id=1, cpu_seconds=0, peak_memory_mb=0, wall_seconds=0)
    done = bare.completed(link, now)
    assert (done.tool_call_id, done.request_id, done.timestamp, done.day) == (
        "call_1",
        "req_1",
        now,
        "2026-12-01",
    )
    own = ExecutionUsage(user_id=1, cpu_seconds=0, peak_memory_mb=0, wall_seconds=0, request_id="mine")
    assert own.completed(link, now).request_id == "mine"
    naive = ExecutionUsage(
        user_id=1, cpu_seconds=0, peak_memory_mb=0, wall_seconds=0, timestamp=datetime(2026, 1, 1)
    )
    assert naive.timestamp is not None and naive.timestamp.tzinfo is UTC


def test_the_link_is_set_only_inside_the_block() -> None:
    assert current_link() == ExecutionLink()
    with linked(ExecutionLink("c", "r")):
        assert current_link().request_id == "r"
        with linked(ExecutionLink("c2", None)):
            assert current_link() == ExecutionLink("c2", None)
        assert current_link().tool_call_id == "c"
    assert current_link() == ExecutionLink()


def test_the_document_round_trips() -> None:
    u = ExecutionUsage(
        user_id="u",
        cpu_seconds=0.25,
        peak_memory_mb=12.5,
        wall_seconds=0.5,
        stored_bytes=9,
        result_tokens=40,
        session_id="s",
        isolation="strict",
        success=False,
    ).completed(ExecutionLink("c", "r"), datetime(2026, 12, 2, 23, 59, tzinfo=UTC))
    with pytest.raises(ValueError, match="priced"):
        u.to_document()
    priced = u.priced(PRICES, 48)
    doc = priced.to_document()
    assert (
        doc["_id"] == u.execution_id and doc["day"] == "2026-12-02" and isinstance(doc["timestamp"], datetime)
    )
    assert ExecutionUsage.from_document({**doc, "unknown_newer_field": 1}) == priced
