"""Usage records for cost dashboards: one document per request, per-user daily totals, a budget.

``token_usage``: one document per request (``_id`` = the request id) with the estimate, the
actual ``usage`` once known, the effective tokens and cost, and a BSON UTC ``timestamp``.
``token_usage_totals``: one document per (user, UTC day), kept with ``$inc`` — so the budget check
reads one small document instead of aggregating the day's requests, and an all-time per-user total
is a cheap aggregation over at most one document per day. When the actual usage replaces an
estimate, only the difference is added, so totals never count a request twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from ..errors import BudgetExceeded
from ..storage.retry import context_for, with_retries
from ._estimate import TokenEstimate
from ._prices import PriceTable, default_prices

__all__ = ["UsageStore"]

GroupBy = Literal["model", "day", "user"]
_GROUP_FIELDS = {"model": "model", "day": "day", "user": "user_id"}
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
    """Per-request token usage in MongoDB, summaries by model/day/user, and a daily budget guard."""

    def __init__(
        self,
        db: AsyncDatabase[Any],
        *,
        clock: Callable[[], datetime] | None = None,
        daily_budget_usd: float | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.db = db
        self.records = db["token_usage"]
        self.totals = db["token_usage_totals"]
        self.clock = clock or (lambda: datetime.now(UTC))
        if daily_budget_usd is not None and daily_budget_usd < 0:
            raise ValueError("daily_budget_usd must be >= 0 (or None for no budget)")
        self.daily_budget_usd = daily_budget_usd
        self.prices = prices or default_prices()
        self._retry = context_for(db)

    async def _retrying(self, op: Callable[[], Any], what: str) -> Any:
        return await with_retries(
            op,
            what=what,
            policy=self._retry.policy,
            server=self._retry.server or "MongoDB",
            on_retry=self._retry.on_retry,
        )

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    async def ensure_indexes(self) -> None:
        """Indexes for queries by user and time, by time, and by model and time."""

        async def op() -> None:
            await self.records.create_index([("user_id", ASCENDING), ("timestamp", DESCENDING)])
            await self.records.create_index([("timestamp", DESCENDING)])
            await self.records.create_index([("model", ASCENDING), ("timestamp", DESCENDING)])
            await self.totals.create_index([("user_id", ASCENDING), ("day", ASCENDING)], unique=True)

        await self._retrying(op, "create token usage indexes")

    async def record_usage(
        self,
        *,
        user_id: Any,
        model: str,
        estimate: TokenEstimate | None = None,
        usage: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Store (or update, by ``request_id``) one request's estimate and/or actual usage; return its id.

        The effective cost is the actual usage's when known, else the estimate's maximum (conservative
        for the budget); the per-user daily totals change by the difference.
        """
        if estimate is None and usage is None:
            raise ValueError("record_usage needs an estimate, a usage, or both")
        rid = request_id or uuid.uuid4().hex
        now = self._now()
        fields: dict[str, Any] = {"user_id": user_id, "model": model, "updated_at": now}
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
        """Requests, tokens and cost per model, UTC day or user (a MongoDB aggregation), sorted.

        Beside the effective ``input_tokens``/``output_tokens``/``cost_usd``, each row says how good the
        estimates were: over the ``measured`` requests (those with both an estimate and the API's
        usage), ``estimated_input_tokens`` against ``actual_input_tokens`` and the sum of the
        per-request absolute differences, ``input_abs_error``.
        """
        if group_by not in _GROUP_FIELDS:
            raise ValueError(f"group_by must be one of {', '.join(_GROUP_FIELDS)}, got {group_by!r}")
        match: dict[str, Any] = {}
        if user_id is not None:
            match["user_id"] = user_id
        if since is not None:
            match["timestamp"] = {"$gte": since if since.tzinfo else since.replace(tzinfo=UTC)}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
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

    async def spent_today(self, user_id: Any) -> float:
        """USD recorded for ``user_id`` in the current UTC day."""
        day = self._now().strftime("%Y-%m-%d")

        async def op() -> Any:
            return await self.totals.find_one({"user_id": user_id, "day": day})

        doc = await self._retrying(op, f"read today's spend of user {user_id!r}")
        return float(doc.get("cost_usd", 0.0)) if doc else 0.0

    async def check_budget(self, user_id: Any, estimate: TokenEstimate) -> None:
        """Raise BudgetExceeded when today's spend plus the estimate's maximum cost passes the daily budget.

        An estimate without a price (unknown model) cannot be checked and passes.
        """
        if self.daily_budget_usd is None or estimate.cost_max_usd is None:
            return
        spent = await self.spent_today(user_id)
        if spent + estimate.cost_max_usd > self.daily_budget_usd:
            raise BudgetExceeded(
                f"user {user_id!r} has spent ${spent:.4f} of the ${self.daily_budget_usd:.2f} daily budget "
                f"and this "
                f"request may cost up to ${estimate.cost_max_usd:.4f}; retry after 00:00 UTC, shorten the "
                "conversation or lower max_output_tokens, or raise CODE_INTERPRETER_DAILY_BUDGET_USD"
            )
