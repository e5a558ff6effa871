"""``code-interpreter usage``: tokens and sandbox cost side by side per user, day, model or session.

The records are those the agent loop and the run path write (:class:`~code_interpreter.tokens.UsageStore`):
one per model request, with the estimate made before it and the usage the API reported after, and
one per execution, with what it used and cost. ``--html FILE`` writes the report with charts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..ledger import format_usd
from ..settings import Settings
from .commands import interpreter
from .util import StderrProgress, UsageProblem

__all__ = ["GROUPS", "cmd_usage", "parse_since", "usage_table"]

GROUPS = ("user", "day", "model", "session")
_KEY = {"model": "model", "day": "day", "user": "user_id", "session": "session_id"}
_NONE = {"model": "(no model)", "session": "(no session)", "day": "-", "user": "-"}
COLUMNS = (
    "requests",
    "input",
    "output",
    "est. error",
    "tokens $",
    "executions",
    "CPU s",
    "peak MB",
    "stored",
    "sandbox $",
    "total $",
)
_SUMMED = (
    "requests",
    "measured",
    "input_tokens",
    "output_tokens",
    "estimated_input_tokens",
    "actual_input_tokens",
    "token_cost_usd",
    "executions",
    "cpu_seconds",
    "stored_bytes",
    "sandbox_cost_usd",
    "cost_usd",
)
NOTE = (
    "est. error: the estimated input tokens against the API's actual ones, over the requests that have "
    "both; executions: one-shot calls and session cells; peak MB: the largest"
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


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # pragma: no cover - the loop returns at GB


def _row(group: str, r: dict[str, Any]) -> list[str]:
    est, actual = r["estimated_input_tokens"], r["actual_input_tokens"]
    key = r[_KEY[group]]
    return [
        _NONE[group] if key is None else str(key),
        f"{r['requests']:,}",
        f"{r['input_tokens']:,}",
        f"{r['output_tokens']:,}",
        f"{(est - actual) / actual * 100:+.1f}%" if r["measured"] and actual else "-",
        format_usd(r["token_cost_usd"]),
        f"{r['executions']:,}",
        f"{r['cpu_seconds']:,.2f}",
        f"{r['peak_memory_mb']:,.0f}" if r["executions"] else "-",
        _bytes(r["stored_bytes"]) if r["executions"] else "-",
        format_usd(r["sandbox_cost_usd"]),
        format_usd(r["cost_usd"]),
    ]


def usage_table(group: str, rows: list[dict[str, Any]]) -> str:
    """The ``cost_summary`` rows as an aligned text table with a total line."""
    if not rows:
        return "No usage recorded."
    body = [_row(group, r) for r in rows]
    if len(rows) > 1:
        total: dict[str, Any] = {k: sum(r[k] for r in rows) for k in _SUMMED}
        total[_KEY[group]] = "total"
        total["peak_memory_mb"] = max(r["peak_memory_mb"] for r in rows)
        body.append(_row(group, total))
    header = [group, *COLUMNS]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [_line(header, widths)]
    lines.extend(_line(b, widths) for b in body)
    lines.append(NOTE)
    return "\n".join(lines)


def _line(cells: list[str], widths: list[int]) -> str:
    """The first cell left-aligned, the numbers right-aligned."""
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


async def cmd_usage(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Print tokens and sandbox cost per user, UTC day, model or session (or JSON), or write the report."""
    since = parse_since(args.since) if args.since else None
    user = getattr(args, "user_id", None)
    # Hosts record Discord-style ids as ints; the command line reads text: match both spellings.
    who: Any = {"$in": [user, int(user)]} if user is not None and user.isdigit() else user
    html: Path | None = args.html
    async with interpreter(settings, progress) as interp:
        if html is not None:
            scope = f"{'all users' if user is None else f'user {user}'}, " + (
                "all days" if since is None else f"since {since:%Y-%m-%d %H:%M} UTC"
            )
            report = await interp.usage.html_report(user_id=who, since=since, scope=scope)
        else:
            rows = await interp.usage.cost_summary(user_id=who, since=since, group_by=args.by)
    if html is not None:
        try:
            await asyncio.to_thread(html.write_text, report, encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"cannot write the report to {html}: {exc.strerror or exc}") from None
        print(f"Wrote the usage report to {html}")
    elif args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(usage_table(args.by, rows))
    return 0
