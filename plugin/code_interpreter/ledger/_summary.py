"""Aggregations over ``sandbox_usage`` and the merge of its rows with the token rows, side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

__all__ = [
    "GROUP_FIELDS",
    "SANDBOX_FIELDS",
    "TOKEN_FIELDS",
    "GroupBy",
    "daily_pipeline",
    "merge_daily",
    "merge_rows",
    "row_order",
    "sandbox_pipeline",
]

GroupBy = Literal["user", "day", "model", "session"]
GROUP_FIELDS: dict[str, str] = {"user": "user_id", "day": "day", "model": "model", "session": "session_id"}
"""The grouping's name → the field it groups by (and the key field of each row)."""

SANDBOX_FIELDS = (
    "executions",
    "failed_executions",
    "cpu_seconds",
    "wall_seconds",
    "peak_memory_mb",
    "stored_bytes",
    "result_tokens",
    "sandbox_cost_usd",
)
"""What each row says of the executions (``peak_memory_mb`` is the largest, the rest are sums)."""
TOKEN_FIELDS = (
    "requests",
    "measured",
    "estimated_only",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "estimated_input_tokens",
    "actual_input_tokens",
    "input_abs_error",
    "token_cost_usd",
)
"""What each row says of the model requests (``token_cost_usd`` is ``usage_summary``'s ``cost_usd``)."""


def _sandbox_group(key: Any) -> dict[str, Any]:
    return {
        "$group": {
            "_id": key,
            "executions": {"$sum": 1},
            "failed_executions": {"$sum": {"$cond": ["$success", 0, 1]}},
            "cpu_seconds": {"$sum": "$cpu_seconds"},
            "wall_seconds": {"$sum": "$wall_seconds"},
            "peak_memory_mb": {"$max": "$peak_memory_mb"},
            "stored_bytes": {"$sum": "$stored_bytes"},
            "result_tokens": {"$sum": {"$ifNull": ["$result_tokens", 0]}},
            "sandbox_cost_usd": {"$sum": "$cost_usd"},
        }
    }


def sandbox_pipeline(match: Mapping[str, Any], group_by: GroupBy, requests: str) -> list[dict[str, Any]]:
    """Executions summed per user, UTC day, session, or model (the model of the request that asked)."""
    stages: list[dict[str, Any]] = [{"$match": dict(match)}]
    if group_by == "model":  # an execution knows its request; the request knows its model
        stages.append(
            {
                "$lookup": {
                    "from": requests,
                    "localField": "request_id",
                    "foreignField": "_id",
                    "as": "request",
                }
            }
        )
        stages.append({"$unwind": {"path": "$request", "preserveNullAndEmptyArrays": True}})
        stages.append(_sandbox_group("$request.model"))
    else:
        stages.append(_sandbox_group(f"${GROUP_FIELDS[group_by]}"))
    return stages


def daily_pipeline(match: Mapping[str, Any], cost_field: str) -> list[dict[str, Any]]:
    """``cost_field`` summed per (UTC day, user)."""
    return [
        {"$match": dict(match)},
        {"$group": {"_id": {"day": "$day", "user_id": "$user_id"}, "cost": {"$sum": f"${cost_field}"}}},
    ]


def row_order(key: Any) -> tuple[bool, bool, Any]:
    """Sort key for group keys of mixed kinds: ints, then strings, None last."""
    if key is None:
        return (True, True, 0)
    return (False, isinstance(key, str), key)


def merge_rows(
    group_by: GroupBy, token_rows: Iterable[Mapping[str, Any]], sandbox_rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per key with the token fields, the sandbox fields and ``cost_usd``, their sum; sorted."""
    field = GROUP_FIELDS[group_by]
    rows: dict[Any, dict[str, Any]] = {}

    def row(key: Any) -> dict[str, Any]:
        if key not in rows:
            rows[key] = {field: key, **dict.fromkeys(TOKEN_FIELDS, 0), **dict.fromkeys(SANDBOX_FIELDS, 0)}
        return rows[key]

    for t in token_rows:
        r = row(t[field])
        for k in TOKEN_FIELDS:
            r[k] = t.get("cost_usd", 0.0) if k == "token_cost_usd" else t.get(k, 0)
    for s in sandbox_rows:
        r = row(s["_id"])
        for k in SANDBOX_FIELDS:
            r[k] = s.get(k, 0)
    for r in rows.values():
        r["token_cost_usd"] = float(r["token_cost_usd"] or 0.0)
        r["sandbox_cost_usd"] = float(r["sandbox_cost_usd"] or 0.0)
        r["cost_usd"] = r["token_cost_usd"] + r["sandbox_cost_usd"]
    return [rows[k] for k in sorted(rows, key=row_order)]


def merge_daily(
    token_rows: Iterable[Mapping[str, Any]], sandbox_rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Rows ``{day, user_id, token_cost_usd, sandbox_cost_usd, cost_usd}`` sorted by day then user."""
    rows: dict[tuple[str, Any], dict[str, Any]] = {}
    for kind, source in (("token_cost_usd", token_rows), ("sandbox_cost_usd", sandbox_rows)):
        for r in source:
            key = (str(r["_id"]["day"]), r["_id"].get("user_id"))
            out = rows.setdefault(
                key, {"day": key[0], "user_id": key[1], "token_cost_usd": 0.0, "sandbox_cost_usd": 0.0}
            )
            out[kind] += float(r.get("cost") or 0.0)
    for out in rows.values():
        out["cost_usd"] = out["token_cost_usd"] + out["sandbox_cost_usd"]
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], row_order(k[1])))]
