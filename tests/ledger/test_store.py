"""Execution records in the database: batched writes, nothing lost on close, totals, budgets, summaries.

Against the real test server. These tests build ExecutionUsage values directly and hand them to
the entry point the run path calls (``interp.usage.record_execution``); the run path itself is
tested in ``test_run_usage.py`` and ``test_end_to_end.py``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from _clock import Clock
from code_interpreter.errors import BudgetExceeded
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.ledger import COLLECTION, ComputePrices, ExecutionLink, ExecutionUsage, linked
from code_interpreter.settings import Settings
from code_interpreter.tokens import TokenCounter, UsageStore

# Round figures: one CPU-second costs $0.001, memory and storage nothing (unless a test says so).
PRICES = ComputePrices(cpu_hour_usd=3.6, memory_gb_hour_usd=0.0, storage_gb_month_usd=0.0)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def run(user: int | str = 1, cpu: float = 1.0, **kw: Any) -> ExecutionUsage:
    return ExecutionUsage(user_id=user, cpu_seconds=cpu, peak_memory_mb=100.0, wall_seconds=cpu, **kw)


async def until(predicate: Callable[[], Any], within_s: float = 10.0) -> None:
    """Poll an async predicate until it is true (the background writer runs on its own schedule)."""
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "not written in time"
        await asyncio.sleep(0.02)


async def test_records_are_buffered_then_written_in_one_batch(mongo_db: AsyncDatabase[Any]) -> None:
    store = UsageStore(mongo_db, compute_prices=PRICES, flush_every=5, flush_interval_s=60)
    await store.ensure_indexes()
    try:
        for i in range(4):
            out = await store.record_execution(run(cpu=float(i)))
            assert out.cost_usd == pytest.approx(i * 0.001) and out.timestamp is not None
        await asyncio.sleep(0.2)  # the writer had every chance to run: nothing is due yet
        assert await mongo_db[COLLECTION].count_documents({}) == 0 and store.executions.pending == 4
        await store.record_execution(run(cpu=4.0))  # the fifth fills the batch

        async def five() -> bool:
            return await mongo_db[COLLECTION].count_documents({}) == 5

        await until(five)
        assert await store.flush() == 0  # waits for the batch in flight (its totals): nothing was left
        assert store.executions.pending == 0
        totals = await mongo_db["token_usage_totals"].find_one({"user_id": 1})
        assert totals is not None and totals["executions"] == 5
        assert totals["sandbox_cost_usd"] == pytest.approx(0.010) and totals["cpu_seconds"] == pytest.approx(
            10
        )
    finally:
        await store.close()


async def test_a_lone_record_is_written_after_the_interval(mongo_db: AsyncDatabase[Any]) -> None:
    store = UsageStore(mongo_db, compute_prices=PRICES, flush_every=100, flush_interval_s=0.05)
    try:
        await store.record_execution(run())

        async def one() -> bool:
            return await mongo_db[COLLECTION].count_documents({}) == 1

        await until(one, within_s=3)
    finally:
        await store.close()


async def test_nothing_recorded_is_lost_on_a_clean_stop(
    make_settings: Callable[..., Settings], mongo_uri: str, db_name: str
) -> None:
    """Record through the interpreter, close it, then read with a client of our own."""
    async with CodeInterpreter(make_settings()) as interp:
        sent = [await interp.usage.record_execution(run(user=f"u{i % 3}", cpu=0.01 * i)) for i in range(250)]
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client[db_name]
        stored = {d["_id"]: d async for d in db[COLLECTION].find()}
        assert set(stored) == {u.execution_id for u in sent}
        assert sum(d["cost_usd"] for d in stored.values()) == pytest.approx(
            sum(u.cost_usd or 0 for u in sent)
        )
        totals = [d async for d in db["token_usage_totals"].find()]
        assert sum(t["executions"] for t in totals) == 250 and len(totals) == 3
    finally:
        await client.close()


async def test_recording_adds_well_under_half_a_millisecond(mongo_db: AsyncDatabase[Any]) -> None:
    """The issue's budget for the whole ledger on a call: at most 0.5 ms p50."""
    store = UsageStore(mongo_db, compute_prices=PRICES)
    try:
        times = []
        for i in range(2000):
            usage = run(user=i % 10, cpu=0.1)
            start = time.perf_counter()
            await store.record_execution(usage)
            times.append(time.perf_counter() - start)
        p50 = statistics.median(times)
        assert p50 < 0.5e-3, f"p50 {p50 * 1e3:.3f} ms"
    finally:
        await store.close()
    assert await mongo_db[COLLECTION].count_documents({}) == 2000


async def test_concurrent_tool_calls_keep_their_own_links(mongo_db: AsyncDatabase[Any]) -> None:
    store = UsageStore(mongo_db, compute_prices=PRICES)

    async def tool_call(i: int) -> None:
        with linked(ExecutionLink(tool_call_id=f"call_{i}", request_id=f"req_{i // 4}")):
            await asyncio.sleep(random.random() / 50)  # interleave the calls
            await store.record_execution(run(user=i))

    try:
        await asyncio.gather(*(tool_call(i) for i in range(20)))
        await store.record_execution(run(user=99))  # outside any tool call: no links
    finally:
        await store.close()
    docs = {d["user_id"]: d async for d in mongo_db[COLLECTION].find()}
    for i in range(20):
        assert (docs[i]["tool_call_id"], docs[i]["request_id"]) == (f"call_{i}", f"req_{i // 4}")
    assert docs[99]["tool_call_id"] is None and docs[99]["request_id"] is None
    records = await store.execution_records(request_id="req_2")
    assert sorted(r.tool_call_id or "" for r in records) == sorted(f"call_{i}" for i in range(8, 12))
    assert [r.timestamp for r in records] == sorted(
        r.timestamp for r in records if r.timestamp
    )  # oldest first


async def test_a_record_written_by_an_earlier_attempt_is_not_stored_twice(
    mongo_db: AsyncDatabase[Any],
) -> None:
    store = UsageStore(mongo_db, compute_prices=PRICES, flush_every=100, flush_interval_s=60)
    try:
        first = await store.record_execution(run())
        await store.record_execution(run())
        # An attempt whose reply was lost had written the first record already.
        await mongo_db[COLLECTION].insert_one(first.to_document())
        assert await store.flush() == 2
    finally:
        await store.close()
    assert await mongo_db[COLLECTION].count_documents({}) == 2


async def test_the_budget_counts_sandbox_cost_before_it_is_written(mongo_db: AsyncDatabase[Any]) -> None:
    clock = Clock(T0)
    store = UsageStore(
        mongo_db,
        clock=clock,
        compute_prices=PRICES,
        daily_budget_usd=0.001,
        flush_every=100,
        flush_interval_s=60,
    )
    try:
        await store.check_budget(5)  # nothing spent
        await store.record_execution(run(user=5, cpu=1.2))  # $0.0012, still in the buffer
        assert await mongo_db[COLLECTION].count_documents({}) == 0
        assert await store.spent_today(5) == pytest.approx(0.0012)
        with pytest.raises(BudgetExceeded) as refused:
            await store.check_budget(5)  # before running code: refused
        message = str(refused.value)
        assert "$0.0012 today ($0.00 tokens, $0.0012 sandbox) of the $0.001 daily budget" in message
        assert "no code runs" in message and "CODE_INTERPRETER_DAILY_BUDGET_USD" in message
        await store.flush()
        assert await store.spent_today(5) == pytest.approx(0.0012)  # written now, counted once
        await store.check_budget(6)  # another user is unaffected
        clock.now += timedelta(days=1)
        await store.check_budget(5)  # a new UTC day
    finally:
        await store.close()


async def test_the_budget_before_a_model_request_adds_sandbox_cost(mongo_db: AsyncDatabase[Any]) -> None:
    counter = TokenCounter(image_hosts=(), prices_file=None)
    est = await counter.estimate("gpt-4o-mini", [{"role": "user", "content": "hi"}], max_output_tokens=100)
    assert est.cost_max_usd is not None
    budget = 0.01
    store = UsageStore(mongo_db, compute_prices=PRICES, daily_budget_usd=budget)
    try:
        await store.record_usage(
            user_id=3, model="gpt-4o-mini", usage={"prompt_tokens": 10_000, "completion_tokens": 0}
        )
        spent_tokens = await store.spent_today(3)
        assert spent_tokens + est.cost_max_usd < budget
        await store.check_budget(3, est)  # tokens alone leave room
        cpu = (budget - spent_tokens) / 0.001  # sandbox cost that leaves less than the estimate
        await store.record_execution(run(user=3, cpu=cpu))
        with pytest.raises(
            BudgetExceeded, match=r"sandbox\) of the \$0.01 daily budget and this request may cost"
        ):
            await store.check_budget(3, est)
    finally:
        await store.close()


async def test_tokens_and_sandbox_side_by_side(mongo_db: AsyncDatabase[Any]) -> None:
    clock = Clock(T0)
    store = UsageStore(mongo_db, clock=clock, compute_prices=PRICES)
    await store.ensure_indexes()
    u = {"prompt_tokens": 1000, "completion_tokens": 100}
    try:
        await store.record_usage(user_id=1, model="gpt-4o", usage=u, request_id="r1", session_id="chat-a")
        await store.record_usage(
            user_id=2, model="gpt-4o-mini", usage=u, request_id="r2", session_id="chat-b"
        )
        await store.record_execution(
            run(user=1, cpu=2.0, request_id="r1", session_id="chat-a", stored_bytes=10)
        )
        await store.record_execution(
            run(user=1, cpu=3.0, request_id="r1", session_id="chat-a", success=False)
        )
        clock.now += timedelta(days=1)
        await store.record_execution(run(user=2, cpu=5.0, request_id="r2", session_id="chat-b"))
        await store.record_execution(run(user=2, cpu=1.0))  # a direct one-shot call: no request, no session

        by_user = await store.cost_summary(group_by="user")
        assert [(r["user_id"], r["requests"], r["executions"]) for r in by_user] == [(1, 1, 2), (2, 1, 2)]
        one = by_user[0]
        assert one["sandbox_cost_usd"] == pytest.approx(0.005) and one["failed_executions"] == 1
        assert one["cost_usd"] == pytest.approx(one["token_cost_usd"] + 0.005) and one["token_cost_usd"] > 0
        assert one["stored_bytes"] == 10 and one["peak_memory_mb"] == 100.0 and one["cpu_seconds"] == 5.0

        by_day = await store.cost_summary(group_by="day")
        assert [(r["day"], r["requests"], r["executions"]) for r in by_day] == [
            ("2026-12-01", 2, 2),
            ("2026-12-02", 0, 2),
        ]
        by_session = await store.cost_summary(group_by="session")
        assert [(r["session_id"], r["requests"], r["executions"]) for r in by_session] == [
            ("chat-a", 1, 2),
            ("chat-b", 1, 1),
            (None, 0, 1),
        ]
        by_model = await store.cost_summary(group_by="model")  # an execution counts for its request's model
        assert [(r["model"], r["executions"], round(r["sandbox_cost_usd"], 6)) for r in by_model] == [
            ("gpt-4o", 2, 0.005),
            ("gpt-4o-mini", 1, 0.005),
            (None, 1, 0.001),
        ]
        mine = await store.cost_summary(user_id=2, since=T0 + timedelta(hours=12), group_by="user")
        assert [(r["user_id"], r["requests"], r["executions"]) for r in mine] == [(2, 0, 2)]

        daily = await store.daily_costs()
        assert [(r["day"], r["user_id"], round(r["sandbox_cost_usd"], 6)) for r in daily] == [
            ("2026-12-01", 1, 0.005),
            ("2026-12-01", 2, 0.0),
            ("2026-12-02", 2, 0.006),
        ]
        with pytest.raises(ValueError, match="group_by"):
            await store.cost_summary(group_by="hour")  # type: ignore[arg-type]
    finally:
        await store.close()


async def test_result_tokens_reach_the_record_buffered_in_flight_or_written(
    mongo_db: AsyncDatabase[Any],
) -> None:
    """The dispatcher knows what the model read only after the run path recorded the execution."""
    store = UsageStore(mongo_db, compute_prices=PRICES, flush_every=100, flush_interval_s=60)
    try:
        buffered, in_flight, written = [await store.record_execution(run(cpu=c)) for c in (1.0, 2.0, 3.0)]
        out = await store.set_result_tokens(buffered, 11)  # replaced in the buffer: no write
        assert out.result_tokens == 11 and out.execution_id == buffered.execution_id
        assert store.executions.pending == 3 and await mongo_db[COLLECTION].count_documents({}) == 0

        flushing = asyncio.create_task(store.flush())
        await asyncio.sleep(0)  # the flush took the batch and is writing it
        assert store.executions.pending == 0
        await store.set_result_tokens(in_flight, 22)  # waits for that write, then updates the record
        assert await flushing == 3
        await store.set_result_tokens(written, 33)

        docs = {d["_id"]: d async for d in mongo_db[COLLECTION].find({})}
        assert [docs[u.execution_id]["result_tokens"] for u in (buffered, in_flight, written)] == [11, 22, 33]
        assert docs[written.execution_id]["cost_usd"] == pytest.approx(0.003)  # nothing else changed
        with pytest.raises(ValueError, match="result_tokens"):
            await store.set_result_tokens(written, -1)
    finally:
        await store.close()


async def test_indexes_for_user_time_session_and_request(mongo_db: AsyncDatabase[Any]) -> None:
    store = UsageStore(mongo_db)
    await store.ensure_indexes()
    await store.ensure_indexes()  # idempotent
    keys = [list(ix["key"].items()) async for ix in await mongo_db[COLLECTION].list_indexes()]
    for wanted in (
        [("user_id", 1), ("timestamp", -1)],
        [("timestamp", -1)],
        [("session_id", 1), ("timestamp", -1)],
        [("request_id", 1)],
    ):
        assert wanted in keys, keys
