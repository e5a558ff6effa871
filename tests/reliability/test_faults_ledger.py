"""The usage ledger when the database goes away: records wait in memory, none is lost or stored twice.

A SecantusDB server of the test's own is killed with ``kill -9`` while executions are being
recorded and restarted on the same port and data. Recording never waits for the database (the call
path stays microseconds), the buffered records keep counting in today's spend, a flush while the
server is down says so with StorageUnavailable and keeps them, and once it is back every record is
written exactly once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from code_interpreter.errors import StorageUnavailable
from code_interpreter.ledger import COLLECTION, ComputePrices, ExecutionUsage
from code_interpreter.storage.retry import RetryContext, RetryPolicy, register_context
from code_interpreter.tokens import UsageStore

from .conftest import OwnServer, within

PRICES = ComputePrices(cpu_hour_usd=3.6, memory_gb_hour_usd=0.0, storage_gb_month_usd=0.0)
QUICK = RetryPolicy(attempts=2, total_s=1.0, wait_initial_s=0.05, wait_max_s=0.1, server_selection_ms=300)


async def test_records_wait_for_the_database_and_are_written_once(own_server: OwnServer) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        own_server.uri, tz_aware=True, serverSelectionTimeoutMS=300
    )
    register_context(client, RetryContext(QUICK, None, "own-server"))
    store = UsageStore(client["ledger"], compute_prices=PRICES, flush_every=1000, flush_interval_s=0.2)
    try:
        await store.ensure_indexes()
        before = [await store.record_execution(ExecutionUsage(7, 1.0, 10.0, 1.0)) for _ in range(5)]
        assert await store.flush() == 5

        own_server.kill9()
        started = time.perf_counter()
        during = [await store.record_execution(ExecutionUsage(7, 2.0, 10.0, 2.0)) for _ in range(20)]
        assert time.perf_counter() - started < 0.1  # recording does not wait for the dead server
        with pytest.raises(StorageUnavailable, match="own-server"):
            await within(30, store.flush())
        assert store.executions.pending == 20
        assert store.executions.pending_cost(7, during[0].day or "") == pytest.approx(20 * 0.002)

        own_server.start()
        await within(30, store.flush())
        assert store.executions.pending == 0
        ids = [d["_id"] async for d in client["ledger"][COLLECTION].find()]
        assert sorted(ids) == sorted(u.execution_id for u in before + during)  # each exactly once
        assert await store.spent_today(7) == pytest.approx(5 * 0.001 + 20 * 0.002)
    finally:
        await store.close()
        await client.close()


async def test_closing_with_the_database_down_says_what_was_not_written(
    own_server: OwnServer, caplog: pytest.LogCaptureFixture
) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        own_server.uri, tz_aware=True, serverSelectionTimeoutMS=300
    )
    register_context(client, RetryContext(QUICK, None, "own-server"))
    store = UsageStore(client["ledger"], compute_prices=PRICES, flush_every=2, flush_interval_s=0.05)
    try:
        own_server.kill9()
        for _ in range(3):
            await store.record_execution(ExecutionUsage(7, 1.0, 10.0, 1.0))
        started = time.perf_counter()
        await within(30, store.close())  # one bounded attempt, then an error in the log: never a hang
        assert time.perf_counter() - started < 10
        assert "3 execution usage record(s) could not be written before close" in caplog.text
    finally:
        await client.close()
