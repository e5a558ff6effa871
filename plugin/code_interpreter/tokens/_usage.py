"""Usage records for cost dashboards: one document per request and per execution, daily totals, a budget.

``token_usage``: one document per request (``_id`` = the request id) with the estimate, the
actual ``usage`` once known, the effective tokens and cost, and a BSON UTC ``timestamp``.
``sandbox_usage``: one document per execution (:class:`~code_interpreter.ledger.ExecutionUsage`),
linked to its user, session, tool call and request, written in batches by
:class:`~code_interpreter.ledger.ExecutionLedger`.
``token_usage_totals``: one document per (user, UTC day), kept with ``$inc`` — token cost in
``cost_usd``, sandbox cost in ``sandbox_cost_usd`` — so the budget check reads one small document
instead of aggregating the day's records, and an all-time per-user total is a cheap aggregation over
at most one document per day. When the actual usage replaces an estimate, only the difference is
added, so totals never count a request twice.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from ..errors import BudgetExceeded, CodeInterpreterError
from ..ledger import (
    ComputePrices,
    ExecutionLedger,
    ExecutionUsage,
    default_compute_prices,
    format_usd,
    render_report,
)
from ..ledger._summary import GROUP_FIELDS, daily_pipeline, merge_daily, merge_rows
from ..ledger._summary import GroupBy as CostGroupBy
from ..settings import FILE_TTL_HOURS, Settings
from ..storage.retry import context_for
from ._estimate import TokenEstimate
from ._prices import PriceTable, default_prices

__all__ = ["UsageStore"]

log = logging.getLogger(__name__)

GroupBy = Literal["model", "day", "user", "session"]
_GROUP_FIELDS = GROUP_FIELDS
# A request whose estimate and actual usage are both recorded (an aggregation expression).
_MEASURED: dict[str, Any] = {
    "$and": [{"$eq": ["$usage_known", True]}, {"$gt": [{"$ifNull": ["$estimate.input_tokens", None]}, None]}]
}


def _int(usage: Mapping[str, Any], *keys: str) -> int:
    v: Any = usage
    for k in keys:
        v = v.get(k) if isinstance(v, Mapping) else getattr(v, k, None)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _usage_dict(usage: Any) -> dict[str, int]:
    """prompt/completion/cached tokens from Chat (prompt_tokens) or Responses (input_tokens) usage."""
    if hasattr(usage, "model_dump"):
        usage = usage.model_dump()
    if not isinstance(usage, Mapping):
        raise ValueError(f"usage must be a mapping like response.usage, got {type(usage).__name__}")
    prompt = _int(usage, "prompt_tokens") or _int(usage, "input_tokens")
    completion = _int(usage, "completion_tokens") or _int(usage, "output_tokens")
    cached = _int(usage, "prompt_tokens_details", "cached_tokens") or _int(
        usage, "input_tokens_details", "cached_tokens"
    )
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": min(cached, prompt)}


class UsageStore:
    """Token usage per request and sandbox usage per execution in MongoDB: summaries, a report, a budget."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        *,
        clock: Callable[[], datetime] | None = None,
        daily_budget_usd: float | None = None,
        prices: PriceTable | None = None,
        compute_prices: ComputePrices | None = None,
        storage_hours: float | None = FILE_TTL_HOURS,
        **ledger_options: Any,
    ) -> None:
        """Keep the records in ``db``.

        Args:
            db: the database.
            clock: returns the current time (injected by tests).
            daily_budget_usd: per-user budget per UTC day, tokens and sandbox together; None: none.
            prices: token prices (default: the packaged table under the operator's prices file).
            compute_prices: sandbox prices (default: the packaged ones under the operator's file).
            storage_hours: how long stored bytes are kept, for the storage price; None: forever.
            ledger_options: ``flush_every``, ``flush_interval_s``, ``max_pending`` of the
                :class:`~code_interpreter.ledger.ExecutionLedger`.
        """
        self.db = db
        self.records = db["token_usage"]
        self.totals = db["token_usage_totals"]
        self.clock = clock or (lambda: datetime.now(UTC))
        if daily_budget_usd is not None and daily_budget_usd < 0:
            raise ValueError("daily_budget_usd must be >= 0 (or None for no budget)")
        self.daily_budget_usd = daily_budget_usd
        self.prices = prices or default_prices()
        self.executions = ExecutionLedger(
            db,
            totals=self.totals.name,
            prices=compute_prices or default_compute_prices(),
            storage_hours=storage_hours,
            clock=self.clock,
            **ledger_options,
        )
        """Sandbox usage records (``sandbox_usage``), written in batches."""
        self._retry = context_for(db)

    @classmethod
    def from_settings(cls, db: AsyncDatabase[Any], settings: Settings, **options: Any) -> UsageStore:
        """A store with the budget, prices file and file lifetime of ``settings``."""
        return cls(
            db,
            daily_budget_usd=settings.daily_budget_usd,
            prices=default_prices(settings.prices_file),
            compute_prices=default_compute_prices(settings.prices_file),
            storage_hours=None if settings.file_ttl_seconds is None else settings.file_ttl_seconds / 3600.0,
            **options,
        )

    @property
    def compute_prices(self) -> ComputePrices:
        """The sandbox's prices in use."""
        return self.executions.prices

    async def _retrying(self, op: Callable[[], Any], what: str) -> Any:
        return await self._retry.run(op, what)

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    async def ensure_indexes(self) -> None:
        """Indexes for queries by user and time, by time, by model or session and time (both kinds)."""

        async def op() -> None:
            await self.records.create_index([("user_id", ASCENDING), ("timestamp", DESCENDING)])
            await self.records.create_index([("timestamp", DESCENDING)])
            await self.records.create_index([("model", ASCENDING), ("timestamp", DESCENDING)])
            await self.records.create_index([("session_id", ASCENDING), ("timestamp", DESCENDING)])
            await self.totals.create_index([("user_id", ASCENDING), ("day", ASCENDING)], unique=True)

        await self._retrying(op, "create token usage indexes")
        await self.executions.ensure_indexes()

    async def record_usage(
        self,
        *,
        user_id: Any,
        model: str,
        estimate: TokenEstimate | None = None,
        usage: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Store (or update, by ``request_id``) one request's estimate and/or actual usage; return its id.

        The effective cost is the actual usage's when known, else the estimate's maximum (conservative
        for the budget); the per-user daily totals change by the difference. ``session_id`` names the
        conversation, so a dashboard can sum it with its executions.
        """
        if estimate is None and usage is None:
            raise ValueError("record_usage needs an estimate, a usage, or both")
        rid = request_id or uuid.uuid4().hex
        now = self._now()
        fields: dict[str, Any] = {"user_id": user_id, "model": model, "updated_at": now}
        if session_id is not None:
            fields["session_id"] = session_id
        if estimate is not None:
            fields["estimate"] = estimate.to_dict()
        if usage is not None:
            u = _usage_dict(usage)
            price = self.prices.price_for(model)
            fields["usage"] = u
            fields["usage_known"] = True
            fields["input_tokens"] = u["prompt_tokens"]
            fields["output_tokens"] = u["completion_tokens"]
            fields["cached_tokens"] = u["cached_tokens"]
            fields["cost_usd"] = (
                price.cost(u["prompt_tokens"], u["completion_tokens"], u["cached_tokens"]) if price else 0.0
            )
            fields["price_known"] = price is not None
        elif estimate is not None:
            fields["usage_known"] = False
            fields["input_tokens"] = estimate.input_tokens
            fields["output_tokens"] = estimate.output_tokens
            fields["cached_tokens"] = 0
            fields["cost_usd"] = estimate.cost_max_usd or 0.0
            fields["price_known"] = estimate.cost_max_usd is not None
        insert = {"timestamp": now, "day": now.strftime("%Y-%m-%d")}

        async def write() -> Any:
            return await self.records.find_one_and_update(
                {"_id": rid},
                {"$set": fields, "$setOnInsert": insert},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )

        before = await self._retrying(write, f"record token usage {rid}")
        day = before["day"] if before else insert["day"]
        delta = {
            k: fields.get(k, 0) - (before.get(k, 0) if before else 0)
            for k in ("input_tokens", "output_tokens", "cached_tokens", "cost_usd")
        }
        delta["requests"] = 0 if before else 1

        async def bump() -> None:
            await self.totals.update_one(
                {"user_id": user_id, "day": day},
                {"$inc": delta, "$set": {"updated_at": now}},
                upsert=True,
            )

        await self._retrying(bump, f"update token usage totals of user {user_id!r}")
        return rid

    async def usage_summary(
        self, user_id: Any = None, since: datetime | None = None, group_by: GroupBy = "model"
    ) -> list[dict[str, Any]]:
        """Requests, tokens and cost per model, UTC day, user or session (a MongoDB aggregation), sorted.

        Beside the effective ``input_tokens``/``output_tokens``/``cost_usd``, each row says how good the
        estimates were: over the ``measured`` requests (those with both an estimate and the API's
        usage), ``estimated_input_tokens`` against ``actual_input_tokens`` and the sum of the
        per-request absolute differences, ``input_abs_error``.
        """
        if group_by not in _GROUP_FIELDS:
            raise ValueError(f"group_by must be one of {', '.join(_GROUP_FIELDS)}, got {group_by!r}")
        pipeline: list[dict[str, Any]] = [
            {"$match": _match(user_id, since)},
            {
                "$group": {
                    "_id": f"${_GROUP_FIELDS[group_by]}",
                    "requests": {"$sum": 1},
                    "input_tokens": {"$sum": "$input_tokens"},
                    "output_tokens": {"$sum": "$output_tokens"},
                    "cached_tokens": {"$sum": "$cached_tokens"},
                    "cost_usd": {"$sum": "$cost_usd"},
                    "estimated_only": {"$sum": {"$cond": ["$usage_known", 0, 1]}},
                    "measured": {"$sum": {"$cond": [_MEASURED, 1, 0]}},
                    "estimated_input_tokens": {"$sum": {"$cond": [_MEASURED, "$estimate.input_tokens", 0]}},
                    "actual_input_tokens": {"$sum": {"$cond": [_MEASURED, "$usage.prompt_tokens", 0]}},
                    "input_abs_error": {
                        "$sum": {
                            "$cond": [
                                _MEASURED,
                                {"$abs": {"$subtract": ["$estimate.input_tokens", "$usage.prompt_tokens"]}},
                                0,
                            ]
                        }
                    },
                }
            },
            {"$sort": {"_id": 1}},
        ]

        async def op() -> list[dict[str, Any]]:
            cursor = await self.records.aggregate(pipeline)
            return [doc async for doc in cursor]

        rows = await self._retrying(op, "summarize token usage")
        out = []
        for r in rows:
            key = r.pop("_id")
            out.append({_GROUP_FIELDS[group_by]: key, **r})
        return out

    async def spending_today(self, user_id: Any) -> dict[str, float]:
        """USD recorded for ``user_id`` in the current UTC day: ``{"tokens", "sandbox", "total"}``.

        The sandbox part includes executions recorded and not written yet.
        """
        day = self._now().strftime("%Y-%m-%d")

        async def op() -> Any:
            return await self.totals.find_one({"user_id": user_id, "day": day})

        doc = await self._retrying(op, f"read today's spend of user {user_id!r}") or {}
        tokens = float(doc.get("cost_usd", 0.0))
        sandbox = float(doc.get("sandbox_cost_usd", 0.0)) + self.executions.pending_cost(user_id, day)
        return {"tokens": tokens, "sandbox": sandbox, "total": tokens + sandbox}

    async def spent_today(self, user_id: Any) -> float:
        """USD recorded for ``user_id`` in the current UTC day, tokens and sandbox together."""
        return (await self.spending_today(user_id))["total"]

    async def check_budget(self, user_id: Any, estimate: TokenEstimate | None = None) -> None:
        """Raise BudgetExceeded when ``user_id``'s spend today (tokens and sandbox) leaves no room.

        With an ``estimate`` (before a model request): when the spend plus the estimate's maximum
        cost passes the daily budget (an estimate without a price, an unknown model, is checked only
        against what is spent). Without one (before running code): when the budget is spent.
        """
        if self.daily_budget_usd is None:
            return
        budget = self.daily_budget_usd
        spent = await self.spending_today(user_id)
        worst = estimate.cost_max_usd if estimate is not None else None
        # Before code (or a request whose cost cannot be priced): refuse once the budget is spent.
        over = spent["total"] >= budget if worst is None else spent["total"] + worst > budget
        if not over:
            return
        so_far = (
            f"user {user_id!r} has spent {format_usd(spent['total'])} today "
            f"({format_usd(spent['tokens'])} tokens, {format_usd(spent['sandbox'])} sandbox) "
            f"of the {format_usd(budget)} daily budget"
        )
        if estimate is None:
            raise BudgetExceeded(
                f"{so_far}, so no code runs for them until 00:00 UTC; raise "
                "CODE_INTERPRETER_DAILY_BUDGET_USD to allow more"
            )
        what = f" and this request may cost up to {format_usd(worst)}" if worst is not None else ""
        raise BudgetExceeded(
            f"{so_far}{what}; retry after 00:00 UTC, shorten the conversation or lower max_output_tokens, "
            "or raise CODE_INTERPRETER_DAILY_BUDGET_USD"
        )

    # -- executions ------------------------------------------------------------------------
    async def record_execution(self, usage: ExecutionUsage) -> ExecutionUsage:
        """Record one execution's measured usage; return it completed (ids, timestamp, cost).

        The entry point of the run path, once per execution (a one-shot call or a session cell).
        It returns at once: the record is written with others in the background (within
        ``flush_interval_s``, on :meth:`flush` and on :meth:`close`) and counts in today's spend
        immediately. Missing ``tool_call_id``/``request_id`` are taken from the dispatcher's
        :func:`~code_interpreter.ledger.current_link` (call it in the task that runs the tool call).
        """
        return self.executions.record(usage)

    async def set_result_tokens(self, usage: ExecutionUsage, tokens: int) -> ExecutionUsage:
        """Add the tokens of what the model read of an execution's result to its record; return the record.

        The dispatcher calls it once it has rendered the result (after the run path recorded it). A
        record the database cannot update keeps no count (logged): the tool call goes on.
        """
        try:
            return await self.executions.set_result_tokens(usage, tokens)
        except CodeInterpreterError as exc:
            log.warning("execution %s: its result tokens were not recorded: %s", usage.execution_id, exc)
            return dataclasses.replace(usage, result_tokens=tokens)

    async def flush(self) -> int:
        """Write the buffered execution records now; return how many.

        Raises:
            StorageUnavailable: the database could not be written (the records stay buffered).
        """
        return await self.executions.flush()

    async def close(self) -> None:
        """Write the buffered execution records and stop the background writer (the interpreter's close)."""
        await self.executions.close()

    async def _flush_for_reading(self) -> None:
        try:
            await self.executions.flush()
        except CodeInterpreterError as exc:  # the summary is still worth showing from what is written
            log.warning(
                "summarizing without %d unwritten execution record(s): %s", self.executions.pending, exc
            )

    async def cost_summary(
        self, user_id: Any = None, since: datetime | None = None, group_by: CostGroupBy = "user"
    ) -> list[dict[str, Any]]:
        """Tokens and sandbox cost side by side per user, UTC day, model or session, sorted.

        Each row has the key (``user_id``, ``day``, ``model`` or ``session_id``), the token fields
        of :meth:`usage_summary` (its ``cost_usd`` as ``token_cost_usd``), the executions'
        ``executions``, ``failed_executions``, ``cpu_seconds``, ``wall_seconds``, ``peak_memory_mb``
        (the largest), ``stored_bytes``, ``result_tokens`` and ``sandbox_cost_usd``, and
        ``cost_usd``, the two costs together. By model, an execution counts for the model of the
        request that asked for it (None outside the agent loop).
        """
        if group_by not in _GROUP_FIELDS:
            raise ValueError(f"group_by must be one of {', '.join(_GROUP_FIELDS)}, got {group_by!r}")
        await self._flush_for_reading()
        token_rows = await self.usage_summary(user_id, since, group_by)
        sandbox_rows = await self.executions.summary(_match(user_id, since), group_by, self.records.name)
        return merge_rows(group_by, token_rows, sandbox_rows)

    async def daily_costs(self, user_id: Any = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """``{day, user_id, token_cost_usd, sandbox_cost_usd, cost_usd}`` per UTC day and user, sorted."""
        await self._flush_for_reading()
        match = _match(user_id, since)

        async def op() -> list[dict[str, Any]]:
            cursor = await self.records.aggregate(daily_pipeline(match, "cost_usd"))
            return [doc async for doc in cursor]

        token_rows = await self._retrying(op, "sum token cost per day")
        return merge_daily(token_rows, await self.executions.daily(match))

    async def execution_records(
        self,
        *,
        user_id: Any = None,
        session_id: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[ExecutionUsage]:
        """The recorded executions of a user, a session or a model request, oldest first."""
        await self._flush_for_reading()
        query = _match(user_id, since)
        if session_id is not None:
            query["session_id"] = session_id
        if request_id is not None:
            query["request_id"] = request_id
        return await self.executions.find(query, limit)

    async def html_report(self, user_id: Any = None, since: datetime | None = None, scope: str = "") -> str:
        """A self-contained HTML report: cost per day by user and by kind, estimate error per model."""
        daily = await self.daily_costs(user_id, since)
        models = await self.usage_summary(user_id, since, "model")
        cp = self.compute_prices
        sources = [
            f"Tokens: {self.prices.source}, as of {self.prices.as_of}.",
            f"Sandbox: CPU {format_usd(cp.cpu_hour_usd)} per CPU-hour, memory "
            f"{format_usd(cp.memory_gb_hour_usd)} per GiB-hour, storage "
            f"{format_usd(cp.storage_gb_month_usd)} per GiB-month; {cp.source}, as of {cp.as_of}.",
        ]
        if not scope:
            who = "all users" if user_id is None else f"user {user_id}"
            scope = (
                f"{who}, {'all days' if since is None else 'since ' + since.strftime('%Y-%m-%d %H:%M UTC')}"
            )
        return render_report(daily, models, generated_at=self._now(), scope=scope, sources=sources)


def _match(user_id: Any, since: datetime | None) -> dict[str, Any]:
    """The ``$match`` of a user (a value or an operator document) and a start time."""
    match: dict[str, Any] = {}
    if user_id is not None:
        match["user_id"] = user_id
    if since is not None:
        match["timestamp"] = {"$gte": since if since.tzinfo else since.replace(tzinfo=UTC)}
    return match
