"""Usage records, per-user daily totals, summaries and the budget, against the real test server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from _clock import Clock
from code_interpreter import tokens
from code_interpreter.errors import BudgetExceeded
from code_interpreter.tokens import TokenEstimate, UsageStore


async def make_estimate(model: str = "gpt-4o", text: str = "hello", max_out: int = 100) -> TokenEstimate:
    counter = tokens.TokenCounter(image_hosts=(), prices_file=None)
    return await counter.estimate(model, [{"role": "user", "content": text}], max_output_tokens=max_out)


async def test_record_then_update_with_actual_usage(mongo_db: AsyncDatabase[Any]) -> None:
    clock = Clock(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    store = UsageStore(mongo_db, clock=clock)
    await store.ensure_indexes()
    est = await make_estimate()
    rid = await store.record_usage(user_id=42, model="gpt-4o", estimate=est)
    doc = await mongo_db["token_usage"].find_one({"_id": rid})
    assert doc is not None
    assert doc["user_id"] == 42 and doc["usage_known"] is False
    assert doc["timestamp"] == clock.now and doc["timestamp"].tzinfo is not None  # BSON UTC datetime
    assert doc["estimate"]["input_tokens"] == est.input_tokens
    assert doc["cost_usd"] == pytest.approx(est.cost_max_usd)
    totals = await mongo_db["token_usage_totals"].find_one({"user_id": 42, "day": "2026-11-26"})
    assert (
        totals is not None
        and totals["requests"] == 1
        and totals["cost_usd"] == pytest.approx(est.cost_max_usd)
    )

    # Later the response arrives: the same document is updated, the totals move by the difference.
    clock.now += timedelta(seconds=3)
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 400}}
    assert await store.record_usage(user_id=42, model="gpt-4o", usage=usage, request_id=rid) == rid
    assert await mongo_db["token_usage"].count_documents({}) == 1
    doc = await mongo_db["token_usage"].find_one({"_id": rid})
    actual = tokens.estimate_cost("gpt-4o", 1000, 200, 400)
    assert doc is not None and doc["usage_known"] and doc["cost_usd"] == pytest.approx(actual)
    assert doc["timestamp"] == clock.now - timedelta(seconds=3)  # the request's time is kept
    assert doc["estimate"]["input_tokens"] == est.input_tokens  # and so is the estimate
    totals = await mongo_db["token_usage_totals"].find_one({"user_id": 42, "day": "2026-11-26"})
    assert totals is not None
    assert totals["requests"] == 1 and totals["cost_usd"] == pytest.approx(actual)
    assert (totals["input_tokens"], totals["output_tokens"], totals["cached_tokens"]) == (1000, 200, 400)


async def test_responses_api_usage_and_sdk_objects(mongo_db: AsyncDatabase[Any]) -> None:
    from openai.types.completion_usage import CompletionUsage

    store = UsageStore(mongo_db)
    rid = await store.record_usage(
        user_id="u", model="gpt-4o-mini", usage={"input_tokens": 50, "output_tokens": 5, "total_tokens": 55}
    )
    sdk = CompletionUsage(prompt_tokens=70, completion_tokens=7, total_tokens=77)
    rid2 = await store.record_usage(user_id="u", model="gpt-4o-mini", usage=sdk)  # type: ignore[arg-type]
    docs = {d["_id"]: d async for d in mongo_db["token_usage"].find()}
    assert docs[rid]["input_tokens"] == 50 and docs[rid2]["input_tokens"] == 70
    with pytest.raises(ValueError, match="estimate, a usage"):
        await store.record_usage(user_id="u", model="gpt-4o")
    with pytest.raises(ValueError, match="usage must be"):
        await store.record_usage(user_id="u", model="gpt-4o", usage="lots")  # type: ignore[arg-type]


async def test_summaries_by_model_day_and_user(mongo_db: AsyncDatabase[Any]) -> None:
    clock = Clock(datetime(2026, 11, 25, 23, 0, tzinfo=UTC))
    store = UsageStore(mongo_db, clock=clock)
    u = {"prompt_tokens": 100, "completion_tokens": 10}
    await store.record_usage(user_id=1, model="gpt-4o", usage=u)
    clock.now += timedelta(hours=2)  # the next UTC day
    await store.record_usage(user_id=1, model="gpt-4o-mini", usage=u)
    await store.record_usage(user_id=2, model="gpt-4o", usage=u)
    await store.record_usage(user_id=2, model="gpt-4o", estimate=await make_estimate())

    by_model = await store.usage_summary()
    assert [(r["model"], r["requests"]) for r in by_model] == [("gpt-4o", 3), ("gpt-4o-mini", 1)]
    assert by_model[0]["estimated_only"] == 1
    by_day = await store.usage_summary(group_by="day")
    assert [(r["day"], r["requests"]) for r in by_day] == [("2026-11-25", 1), ("2026-11-26", 3)]
    by_user = await store.usage_summary(group_by="user")
    assert [(r["user_id"], r["requests"]) for r in by_user] == [(1, 2), (2, 2)]
    mine = await store.usage_summary(user_id=1, since=datetime(2026, 11, 26, tzinfo=UTC))
    assert [(r["model"], r["input_tokens"], r["output_tokens"]) for r in mine] == [("gpt-4o-mini", 100, 10)]
    expected = tokens.estimate_cost("gpt-4o-mini", 100, 10)
    assert mine[0]["cost_usd"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="group_by"):
        await store.usage_summary(group_by="hour")  # type: ignore[arg-type]


async def test_summaries_compare_estimates_with_actual_usage(mongo_db: AsyncDatabase[Any]) -> None:
    """What a cost dashboard checks first: how far the estimates were from what the API reported."""
    store = UsageStore(mongo_db)
    est = await make_estimate()  # "hello" on gpt-4o
    n = est.input_tokens
    for actual in (n, n + 4, n - 2):  # estimate first, the actual usage after, as the agent loop does
        rid = await store.record_usage(user_id=1, model="gpt-4o", estimate=est)
        await store.record_usage(
            user_id=1, model="gpt-4o", usage={"prompt_tokens": actual, "completion_tokens": 3}, request_id=rid
        )
    await store.record_usage(user_id=1, model="gpt-4o", estimate=est)  # no usage yet: not measured
    await store.record_usage(user_id=1, model="gpt-4o", usage={"prompt_tokens": 50, "completion_tokens": 1})
    (row,) = await store.usage_summary()
    assert (row["requests"], row["measured"], row["estimated_only"]) == (5, 3, 1)
    assert row["estimated_input_tokens"] == 3 * n
    assert row["actual_input_tokens"] == 3 * n + 2
    assert row["input_abs_error"] == 0 + 4 + 2


async def test_indexes_exist(mongo_db: AsyncDatabase[Any]) -> None:
    store = UsageStore(mongo_db)
    await store.ensure_indexes()
    await store.ensure_indexes()  # idempotent
    keys = [list(ix["key"].items()) async for ix in await mongo_db["token_usage"].list_indexes()]
    assert [("user_id", 1), ("timestamp", -1)] in keys and [("timestamp", -1)] in keys
    totals = [ix async for ix in await mongo_db["token_usage_totals"].list_indexes()]
    assert any(ix.get("unique") and list(ix["key"]) == ["user_id", "day"] for ix in totals)


async def test_budget_guard(mongo_db: AsyncDatabase[Any]) -> None:
    clock = Clock(datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    est = await make_estimate(max_out=1000)
    assert est.cost_max_usd is not None
    budget = 0.05
    store = UsageStore(mongo_db, clock=clock, daily_budget_usd=budget)
    await store.check_budget(7, est)  # nothing spent yet
    # Spend just under the budget: the next request's maximum would pass it.
    spent_usage = {"prompt_tokens": int((budget - est.cost_max_usd / 2) / 2.5 * 1e6), "completion_tokens": 0}
    await store.record_usage(user_id=7, model="gpt-4o", usage=spent_usage)
    with pytest.raises(BudgetExceeded, match="daily budget"):
        await store.check_budget(7, est)
    await store.check_budget(8, est)  # another user is unaffected
    clock.now += timedelta(days=1)
    await store.check_budget(7, est)  # a new UTC day
    await UsageStore(mongo_db, clock=clock).check_budget(7, est)  # no budget configured
    unknown = await make_estimate(model="brand-new-model")
    await store.check_budget(7, unknown)  # no price: cannot be checked, passes
    with pytest.raises(ValueError):
        UsageStore(mongo_db, daily_budget_usd=-1)
