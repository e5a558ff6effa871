"""The cost ledger: what each sandbox execution used and cost, recorded beside the token records.

- :class:`ExecutionUsage`: one execution's measures (CPU seconds, peak memory, wall time, stored
  bytes, the tokens the model read of its result), its links (user, session, tool call, model
  request) and its cost.
- :class:`ComputePrices` (:func:`default_compute_prices`): the operator's CPU-hour, GB-hour and
  GB-month prices, dated defaults in ``data/compute_prices.json``, overridden by the prices file;
  :func:`price_execution` prices one record.
- :class:`ExecutionLedger`: the ``sandbox_usage`` collection, written in batches off the call path
  (``await interp.usage.record_execution(usage)`` is the entry point).
- :func:`linked` / :func:`current_link`: the dispatcher hands the tool call and request ids to
  the execution it starts.
- :func:`format_usd` prints money with the precision it needs; :func:`render_report` writes the
  HTML report.
"""

from __future__ import annotations

from ._ledger import COLLECTION, FLUSH_EVERY, FLUSH_INTERVAL_S, MAX_PENDING, ExecutionLedger
from ._link import ExecutionLink, current_link, linked
from ._money import format_usd
from ._prices import ComputeCost, ComputePrices, default_compute_prices
from ._record import ExecutionUsage, price_execution
from ._report import render_report

__all__ = [
    "COLLECTION",
    "FLUSH_EVERY",
    "FLUSH_INTERVAL_S",
    "MAX_PENDING",
    "ComputeCost",
    "ComputePrices",
    "ExecutionLedger",
    "ExecutionLink",
    "ExecutionUsage",
    "current_link",
    "default_compute_prices",
    "format_usd",
    "linked",
    "price_execution",
    "render_report",
]
