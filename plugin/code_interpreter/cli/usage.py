"""``code-interpreter usage``: token usage and cost per model, day or user, estimates against actuals.

The records are those the agent loop writes (:class:`~code_interpreter.tokens.UsageStore`): one
per model request, with the estimate made before it and the usage the API reported after.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from ..settings import Settings
from .commands import interpreter
from .util import StderrProgress, UsageProblem

__all__ = ["cmd_usage", "parse_since", "usage_table"]

GROUPS = ("model", "day", "user")
_KEY = {"model": "model", "day": "day", "user": "user_id"}
COLUMNS = (
    "requests",
    "measured",
    "est. input",
    "actual input",
    "error",
    "mean |err|",
    "output",
    "cost USD",
)


def parse_since(text: str) -> datetime:
    """A date (``2026-11-26``) or an ISO date-time, as an aware UTC datetime."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageProblem(
            f"--since {text!r} is not a date: use YYYY-MM-DD or an ISO date-time such as 2026-11-26T08:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _row(group: str, r: dict[str, Any]) -> list[str]:
    est, actual, measured = r["estimated_input_tokens"], r["actual_input_tokens"], r["measured"]
    error = f"{(est - actual) / actual * 100:+.1f}%" if actual else "-"
    mean_abs = f"{r['input_abs_error'] / measured:.1f}" if measured else "-"
    cost = f"{r['cost_usd']:.6f}"
    return [
        str(r[_KEY[group]]),
        f"{r['requests']:,}",
        f"{measured:,}",
        f"{est:,}" if measured else "-",
        f"{actual:,}" if measured else "-",
        error,
        mean_abs,
        f"{r['output_tokens']:,}",
        cost,
    ]


def usage_table(group: str, rows: list[dict[str, Any]]) -> str:
    """The summary rows as an aligned text table with a total line."""
    if not rows:
        return "No usage recorded."
    body = [_row(group, r) for r in rows]
    if len(rows) > 1:
        total = {
            _KEY[group]: "total",
            **{
                k: sum(r[k] for r in rows)
                for k in (
                    "requests",
                    "measured",
                    "estimated_input_tokens",
                    "actual_input_tokens",
                    "input_abs_error",
                    "output_tokens",
                    "cost_usd",
                )
            },
        }
        body.append(_row(group, total))
    header = [group, *COLUMNS]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [_line(header, widths)]
    lines.extend(_line(b, widths) for b in body)
    lines.append(
        "measured: requests with both an estimate and the API's usage; error: their estimated input "
        "tokens against the actual ones; mean |err|: per measured request, in tokens"
    )
    return "\n".join(lines)


def _line(cells: list[str], widths: list[int]) -> str:
    """The first cell left-aligned, the numbers right-aligned."""
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


async def cmd_usage(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Print the usage records as a table (or JSON) grouped by model, UTC day or user."""
    since = parse_since(args.since) if args.since else None
    user = getattr(args, "user_id", None)
    # Hosts record Discord-style ids as ints; the command line reads text: match both spellings.
    who: Any = {"$in": [user, int(user)]} if user is not None and user.isdigit() else user
    async with interpreter(settings, progress) as interp:
        rows = await interp.usage.usage_summary(user_id=who, since=since, group_by=args.by)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(usage_table(args.by, rows))
    return 0
