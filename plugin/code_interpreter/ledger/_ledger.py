"""ExecutionLedger: execution usage records written in batches, off the call path, none lost on a clean stop.

``record`` prices and stamps a record and appends it to an in-memory buffer (microseconds: the
call never waits for the database). A background task writes the buffer — one ``insert_many`` into
``sandbox_usage`` and one ``bulk_write`` of ``$inc`` into the per-user daily totals — when it
holds ``flush_every`` records or ``flush_interval_s`` after the first one, and :meth:`close`
writes whatever is left. Until written, a record's cost still counts in :meth:`pending_cost`, so
the budget guard sees it at once.

A failed write keeps the batch for the next attempt (bounded by ``max_pending``; past it the
oldest records are dropped and logged). Records carry their own ``_id``, so a batch written again
after a lost reply is not stored twice. Both writes are journaled: a written batch survives a crash
of the server (one fsync per batch, off the call path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from ..errors import CodeInterpreterError, StorageUnavailable
from ..settings import FILE_TTL_HOURS
from ..storage.retry import context_for
from ._link import current_link
from ._prices import ComputePrices, default_compute_prices
from ._record import ExecutionUsage
from ._summary import GroupBy, daily_pipeline, sandbox_pipeline

__all__ = ["COLLECTION", "FLUSH_EVERY", "FLUSH_INTERVAL_S", "MAX_PENDING", "ExecutionLedger"]

log = logging.getLogger(__name__)

COLLECTION = "sandbox_usage"
"""One document per execution."""
FLUSH_EVERY = 100
"""Records buffered before a write is started at once."""
FLUSH_INTERVAL_S = 1.0
"""Most seconds a record waits in the buffer."""
MAX_PENDING = 10_000
"""Most records kept while the database cannot be written (the oldest are dropped past it)."""

_DUPLICATE_KEY = 11000


class ExecutionLedger:
    """The ``sandbox_usage`` collection: buffered writes, per-user daily totals, and the pending cost."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        *,
        totals: str = "token_usage_totals",
        prices: ComputePrices | None = None,
        storage_hours: float | None = FILE_TTL_HOURS,
        clock: Callable[[], datetime] | None = None,
        flush_every: int = FLUSH_EVERY,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """Record into ``db``'s ``sandbox_usage`` and bump its ``totals`` collection (per user and UTC day).

        Args:
            db: the database.
            totals: the per-user daily totals collection shared with the token records.
            prices: compute prices (default :func:`default_compute_prices`).
            storage_hours: how long stored bytes are kept, for the storage price; None: forever.
            clock: returns the current time (injected by tests).
            flush_every: write as soon as this many records are buffered.
            flush_interval_s: write at most this long after a record was buffered.
            max_pending: most records kept while writes fail.
        """
        if flush_every < 1 or flush_interval_s <= 0 or max_pending < flush_every:
            raise ValueError("need flush_every >= 1, flush_interval_s > 0 and max_pending >= flush_every")
        self.records = db[COLLECTION]
        self.totals = db[totals]
        self._records_ack = self.records.with_options(write_concern=_journaled(self.records.write_concern))
        self._totals_ack = self.totals.with_options(write_concern=_journaled(self.totals.write_concern))
        self.prices = prices or default_compute_prices()
        self.storage_hours = storage_hours
        self.clock = clock or (lambda: datetime.now(UTC))
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.dropped = 0
        """Records dropped because writes kept failing past ``max_pending``."""
        self._retry = context_for(db)
        self._pending: list[ExecutionUsage] = []
        self._pending_cost: defaultdict[tuple[Any, str], float] = defaultdict(float)
        self._task: asyncio.Task[CodeInterpreterError | None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False

    async def _retrying(self, op: Callable[[], Any], what: str) -> Any:
        return await self._retry.run(op, what)

    async def ensure_indexes(self) -> None:
        """Indexes for queries by user and time, by time, by session and by model request."""

        async def op() -> None:
            await self.records.create_index([("user_id", ASCENDING), ("timestamp", DESCENDING)])
            await self.records.create_index([("timestamp", DESCENDING)])
            await self.records.create_index([("session_id", ASCENDING), ("timestamp", DESCENDING)])
            await self.records.create_index([("request_id", ASCENDING)])

        await self._retrying(op, "create sandbox usage indexes")

    # -- reading --------------------------------------------------------------------------
    async def summary(
        self, match: dict[str, Any], group_by: GroupBy, requests: str = "token_usage"
    ) -> list[dict[str, Any]]:
        """Executions summed per user, day, session or model (``_id`` = the key); written records only."""
        return await self._aggregate(sandbox_pipeline(match, group_by, requests), "summarize sandbox usage")

    async def daily(self, match: dict[str, Any]) -> list[dict[str, Any]]:
        """Sandbox cost per (UTC day, user): ``{_id: {day, user_id}, cost}``."""
        return await self._aggregate(daily_pipeline(match, "cost_usd"), "sum sandbox cost per day")

    async def find(self, query: dict[str, Any], limit: int = 1000) -> list[ExecutionUsage]:
        """The written records matching ``query``, oldest first (at most ``limit``)."""

        async def op() -> list[dict[str, Any]]:
            return await self.records.find(query).sort("timestamp", ASCENDING).limit(limit).to_list(None)

        docs = await self._retrying(op, "read execution usage records")
        return [ExecutionUsage.from_document(d) for d in docs]

    async def _aggregate(self, pipeline: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
        async def op() -> list[dict[str, Any]]:
            cursor = await self.records.aggregate(pipeline)
            return [doc async for doc in cursor]

        return list(await self._retrying(op, what))

    # -- the call path -------------------------------------------------------------------
    def record(self, usage: ExecutionUsage) -> ExecutionUsage:
        """Complete ``usage`` (links, timestamp, cost), buffer it for writing, and return it at once."""
        now = self.clock()
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
        usage = usage.completed(current_link(), now, self.prices, self.storage_hours)
        self._pending.append(usage)
        self._pending_cost[(usage.user_id, usage.day or "")] += usage.cost_usd or 0.0
        if len(self._pending) > self.max_pending:
            self._drop(len(self._pending) - self.max_pending)
        if len(self._pending) >= self.flush_every:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="usage-ledger-flush")
        return usage

    async def set_result_tokens(self, usage: ExecutionUsage, tokens: int) -> ExecutionUsage:
        """``usage`` (as :meth:`record` returned it) with ``result_tokens``, in its record too.

        The tokens are known only once the result is rendered for the model, after it was recorded:
        a buffered record is replaced (no write), one already written is updated.

        Raises:
            StorageUnavailable: the written record could not be updated.
        """
        amended = dataclasses.replace(usage, result_tokens=tokens)
        if self._replace_pending(amended):
            return amended
        async with self._lock:  # a batch being written now is written (or put back) when this is held
            if self._replace_pending(amended):
                return amended

            async def op() -> None:
                await self._records_ack.update_one(
                    {"_id": usage.execution_id}, {"$set": {"result_tokens": tokens}}
                )

            try:
                await self._retrying(op, "update an execution usage record")
            except PyMongoError as exc:
                raise StorageUnavailable(
                    f"could not update execution usage record {usage.execution_id}: {exc}; check the "
                    "server's logs and that this user may write the database"
                ) from exc
        return amended

    def _replace_pending(self, usage: ExecutionUsage) -> bool:
        for i in range(len(self._pending) - 1, -1, -1):  # the newest are at the end
            if self._pending[i].execution_id == usage.execution_id:
                self._pending[i] = usage
                return True
        return False

    def pending_cost(self, user_id: Any, day: str) -> float:
        """USD of ``user_id``'s records of ``day`` not written yet."""
        return self._pending_cost.get((user_id, day), 0.0)

    @property
    def pending(self) -> int:
        """Records buffered and not written yet."""
        return len(self._pending)

    # -- writing --------------------------------------------------------------------------
    async def flush(self) -> int:
        """Write every buffered record now; return how many were written.

        Raises:
            StorageUnavailable: the database could not be written (the records stay buffered).
        """
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                written = await self._write(batch)
            except BaseException:
                self._pending[:0] = batch  # in front: the oldest are written (or dropped) first
                if len(self._pending) > self.max_pending:
                    self._drop(len(self._pending) - self.max_pending)
                raise
            for usage in batch:
                self._unpend(usage)
            return written

    async def close(self) -> None:
        """Write what is buffered and stop the background task; records kept past a failure are logged."""
        self._closing = True
        self._wake.set()
        try:
            task, self._task = self._task, None
            failure: CodeInterpreterError | None = None
            if task is not None:
                try:
                    failure = await task  # its last flush, now (None when it wrote everything)
                except Exception:  # a bug in the task must not stop the interpreter from closing
                    log.exception("the usage ledger's flush task failed")
            if failure is None:  # one attempt, not two, when the database is down
                try:
                    await self.flush()
                except CodeInterpreterError as exc:
                    failure = exc
            if failure is not None:
                log.error(
                    "%d execution usage record(s) could not be written before close: %s",
                    self.pending,
                    failure,
                )
        finally:
            self._closing = False
            self._wake.clear()

    async def _drain(self) -> CodeInterpreterError | None:
        """Flush when the buffer fills or the interval passes; end when the buffer is empty.

        Returns the failure that ended it while closing, else None.
        """
        while self._pending:
            if not self._wake.is_set() and not self._closing:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self.flush()
            except CodeInterpreterError as exc:
                if self._closing:
                    return exc
                log.warning("%d execution usage record(s) not written yet, retrying: %s", self.pending, exc)
            except Exception:  # a bug: keep the records for close() rather than loop on it
                log.exception(
                    "the usage ledger's flush task failed; %d record(s) wait for close()", self.pending
                )
                return None
        return None

    async def _write(self, batch: list[ExecutionUsage]) -> int:
        try:
            return await self._write_batch(batch)
        except PyMongoError as exc:  # a refusal by the server (not a lost connection: those are retried)
            raise StorageUnavailable(
                f"could not write {len(batch)} execution usage record(s): {type(exc).__name__}: {exc}; "
                "check the server's logs and that this user may write the database"
            ) from exc

    async def _write_batch(self, batch: list[ExecutionUsage]) -> int:
        docs = [u.to_document() for u in batch]
        rejected: set[str] = set()

        async def insert() -> None:
            try:
                await self._records_ack.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                for err in exc.details.get("writeErrors", []):
                    if err.get("code") != _DUPLICATE_KEY:  # a duplicate: written by an earlier attempt
                        rejected.add(str(docs[err["index"]]["_id"]))
                        log.error("execution usage record %s rejected: %s", docs[err["index"]]["_id"], err)

        await self._retrying(insert, f"record {len(docs)} execution usage record(s)")
        kept = [u for u in batch if u.execution_id not in rejected]
        await self._bump_totals(kept)
        return len(kept)

    async def _bump_totals(self, batch: list[ExecutionUsage]) -> None:
        sums: dict[tuple[Any, str], dict[str, float]] = {}
        for u in batch:
            s = sums.setdefault((u.user_id, u.day or ""), defaultdict(float))
            s["sandbox_cost_usd"] += u.cost_usd or 0.0
            s["executions"] += 1
            s["cpu_seconds"] += u.cpu_seconds
            s["stored_bytes"] += u.stored_bytes
        now = self.clock()
        ops = [
            UpdateOne(
                {"user_id": user, "day": day},
                {
                    "$inc": {k: int(v) if k in ("executions", "stored_bytes") else v for k, v in inc.items()},
                    "$set": {"updated_at": now},
                },
                upsert=True,
            )
            for (user, day), inc in sums.items()
        ]
        if not ops:
            return

        async def bump() -> None:
            todo = ops
            for _ in range(2):  # two hosts creating the same day's document: the loser updates it
                try:
                    await self._totals_ack.bulk_write(todo, ordered=False)
                    return
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                        raise
                    todo = [todo[e["index"]] for e in errors]
            await self._totals_ack.bulk_write(todo, ordered=False)

        await self._retrying(bump, "update the per-user daily totals with sandbox cost")

    def _unpend(self, usage: ExecutionUsage) -> None:
        key = (usage.user_id, usage.day or "")
        left = self._pending_cost.get(key, 0.0) - (usage.cost_usd or 0.0)
        if left <= 1e-15:
            self._pending_cost.pop(key, None)
        else:
            self._pending_cost[key] = left

    def _drop(self, n: int) -> None:
        dropped, self._pending = self._pending[:n], self._pending[n:]
        for usage in dropped:
            self._unpend(usage)
        self.dropped += n
        log.error(
            "dropped %d execution usage record(s): the database could not be written and more than %d "
            "were waiting; check MONGODB_URI and the server",
            n,
            self.max_pending,
        )


def _journaled(wc: WriteConcern) -> WriteConcern:
    """``wc`` with ``j=True`` (as the file store's acknowledgements), unless writes are unacknowledged."""
    doc = dict(wc.document)
    if doc.get("w") == 0:
        return wc
    return WriteConcern(w=doc.get("w"), wtimeout=doc.get("wtimeout"), j=True, fsync=doc.get("fsync"))
