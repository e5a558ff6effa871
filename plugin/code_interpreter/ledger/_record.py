"""ExecutionUsage: what one execution used and cost, and the user, session, call and request it served."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._copies import replaced
from ..settings import FILE_TTL_HOURS
from ._link import ExecutionLink
from ._prices import ComputeCost, ComputePrices, default_compute_prices

__all__ = ["ExecutionUsage", "price_execution"]


_NUMBER = (int, float)
_USER_ID = (int, str)


def _new_id() -> str:
    """``uuid.uuid4().hex``, built from the same 16 random bytes without the UUID object (a third the cost:
    one per execution)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


@dataclass(frozen=True)  # no slots: copied per call by _copies.replaced
class ExecutionUsage:
    """The measured usage of one execution (a one-shot call or a session cell), its links and its cost.

    The run path builds one per execution and hands it to ``interp.usage.record_execution``, which
    prices it (when ``cost`` is None), stamps it (when ``timestamp`` is None), fills the tool call
    and request ids from the dispatcher's :func:`~code_interpreter.ledger.current_link` (when None)
    and records it; ``result["usage"]`` is its :meth:`to_dict`.
    """

    user_id: int | str
    """The user the code ran for."""
    cpu_seconds: float
    """CPU time (user + system) of everything in the sandbox, its children included."""
    peak_memory_mb: float
    """Peak memory the execution itself used, in MiB (not the pages it shares with the warm parent)."""
    wall_seconds: float
    """Wall-clock time of the execution."""
    stored_bytes: int = 0
    """Bytes it added to the store: generated files and session snapshots written."""
    result_tokens: int | None = None
    """Tokens of what the model read of the result; None when no model read it."""
    session_id: str | None = None
    """The session it ran in; None for a one-shot call."""
    tool_call_id: str | None = None
    """The model's tool call it answered; None outside a tool call."""
    request_id: str | None = None
    """The model request whose answer asked for the call (a token_usage record's id); None outside one."""
    isolation: str = ""
    """The sandbox it ran in: ``strict``, ``namespaces`` or ``none``."""
    success: bool = True
    """Whether the code ran without an error."""
    timestamp: datetime | None = None
    """When it ran (UTC); None: stamped when recorded."""
    cost: ComputeCost | None = None
    """What it cost by resource; None: priced with the operator's compute prices when recorded."""
    execution_id: str = field(default_factory=_new_id)
    """The record's id, unique per execution."""
    measured_by: str = ""
    """Where the measures come from: ``cgroup``, ``procfs`` or ``cgroup+procfs`` (the sandbox's supervisor),
    ``snapshot`` for a session's saved snapshot (its bytes only); "" when not measured by the run path."""

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "peak_memory_mb", "wall_seconds"):
            value = getattr(self, name)
            if type(value) is float and 0.0 <= value < math.inf:
                continue  # the run path's measures: finite, non-negative floats (NaN fails the comparison)
            if isinstance(value, bool) or not isinstance(value, _NUMBER) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name in ("stored_bytes", "result_tokens"):
            value = getattr(self, name)
            if value is None and name == "result_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if isinstance(self.user_id, bool) or not isinstance(self.user_id, _USER_ID):
            raise ValueError(f"user_id must be an int or a str, got {self.user_id!r}")
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            object.__setattr__(self, "timestamp", self.timestamp.replace(tzinfo=UTC))

    @property
    def cost_usd(self) -> float | None:
        """Total cost in USD, None until priced."""
        return None if self.cost is None else self.cost.total_usd

    @property
    def day(self) -> str | None:
        """The UTC day it ran (``YYYY-MM-DD``), None until stamped."""
        ts = self.timestamp
        if ts is None:
            return None
        return (ts if ts.tzinfo is UTC else ts.astimezone(UTC)).date().isoformat()

    def priced(self, prices: ComputePrices, storage_hours: float | None) -> ExecutionUsage:
        """A copy with ``cost`` computed from ``prices`` (storage kept ``storage_hours``; None: forever)."""
        return dataclasses.replace(self, cost=self._cost(prices, storage_hours))

    def _cost(self, prices: ComputePrices, storage_hours: float | None) -> ComputeCost:
        return prices.cost(
            cpu_seconds=self.cpu_seconds,
            peak_memory_mb=self.peak_memory_mb,
            wall_seconds=self.wall_seconds,
            stored_bytes=self.stored_bytes,
            storage_hours=storage_hours,
        )

    def completed(
        self,
        link: ExecutionLink,
        now: datetime,
        prices: ComputePrices | None = None,
        storage_hours: float | None = None,
    ) -> ExecutionUsage:
        """A copy with the missing ids taken from ``link``, the missing timestamp set to ``now`` and, with
        ``prices``, the missing cost computed as :meth:`priced` does (one copy for all three)."""
        changes: dict[str, Any] = {}
        if prices is not None and self.cost is None:
            changes["cost"] = self._cost(prices, storage_hours)
        if self.tool_call_id is None and link.tool_call_id:
            changes["tool_call_id"] = link.tool_call_id
        if self.request_id is None and link.request_id:
            changes["request_id"] = link.request_id
        if self.timestamp is None:
            changes["timestamp"] = now if now.tzinfo else now.replace(tzinfo=UTC)
        if not changes:
            return self
        # On the call path: a copy without ``__init__`` (the changed values are already checked).
        return replaced(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data, JSON-ready view (what ``result["usage"]`` carries); the timestamp in ISO 8601."""
        return {
            "execution_id": self.execution_id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "tool_call_id": self.tool_call_id,
            "request_id": self.request_id,
            "isolation": self.isolation,
            "success": self.success,
            "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
            "cpu_seconds": self.cpu_seconds,
            "peak_memory_mb": self.peak_memory_mb,
            "wall_seconds": self.wall_seconds,
            "stored_bytes": self.stored_bytes,
            "result_tokens": self.result_tokens,
            "cost_usd": self.cost_usd,
            "cost": None if self.cost is None else self.cost.to_dict(),
            "measured_by": self.measured_by,
        }

    def to_document(self) -> dict[str, Any]:
        """The MongoDB document: ``_id`` = the execution id, a BSON UTC ``timestamp`` and its ``day``."""
        if self.timestamp is None or self.cost is None:
            raise ValueError(
                "an ExecutionUsage is stored once stamped and priced (UsageStore.record_execution)"
            )
        doc = self.to_dict()
        doc["_id"] = doc.pop("execution_id")
        doc["timestamp"] = self.timestamp
        doc["day"] = self.day
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> ExecutionUsage:
        """The record back from its MongoDB document (unknown keys ignored)."""
        cost = doc.get("cost") or None
        return cls(
            user_id=doc["user_id"],
            cpu_seconds=float(doc["cpu_seconds"]),
            peak_memory_mb=float(doc["peak_memory_mb"]),
            wall_seconds=float(doc["wall_seconds"]),
            stored_bytes=int(doc.get("stored_bytes") or 0),
            result_tokens=doc.get("result_tokens"),
            session_id=doc.get("session_id"),
            tool_call_id=doc.get("tool_call_id"),
            request_id=doc.get("request_id"),
            isolation=str(doc.get("isolation") or ""),
            success=bool(doc.get("success", True)),
            timestamp=doc.get("timestamp"),
            cost=None
            if cost is None
            else ComputeCost(float(cost["cpu_usd"]), float(cost["memory_usd"]), float(cost["storage_usd"])),
            execution_id=str(doc["_id"]),
            measured_by=str(doc.get("measured_by") or ""),
        )


def price_execution(
    usage: ExecutionUsage,
    prices: ComputePrices | None = None,
    *,
    storage_hours: float | None = FILE_TTL_HOURS,
) -> ExecutionUsage:
    """``usage`` priced with ``prices`` (default: the packaged and operator compute prices).

    Args:
        usage: the measured execution.
        prices: compute prices; default :func:`~code_interpreter.ledger.default_compute_prices`.
        storage_hours: how long the stored bytes are kept (``Settings.file_expiration_hours``);
            None: forever (charged one month).
    """
    return usage.priced(prices or default_compute_prices(), storage_hours)
