"""``code-interpreter sessions``: a user's sessions as every host sees them (live anywhere, or saved)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..settings import Settings
from .commands import PROG, interpreter, user_of
from .util import StderrProgress, UsageProblem

__all__ = ["SESSION_ACTIONS", "add_parser", "cmd_sessions"]

SESSION_ACTIONS = ("list", "reset", "delete")


def add_parser(sub: Any, user_option: Any) -> None:
    """The ``sessions`` subcommand."""
    s = sub.add_parser(
        "sessions",
        help="list a user's sessions (live on any host, or saved), reset or delete them",
        description="A session is live on one host at a time (the one its cells last ran on) and saved to "
        "the database when it ends there; any host sharing the database continues it. `list` shows each, "
        "`reset ID` forgets one (its next call starts fresh, and a host running it stops its copy), "
        "`delete ID…` forgets several at once.",
    )
    s.add_argument("action", nargs="?", default="list", choices=SESSION_ACTIONS, metavar="ACTION",
                   help="list (the default), reset or delete")  # fmt: skip
    s.add_argument("ids", nargs="*", metavar="SESSION_ID", help="the sessions to reset or delete")
    s.add_argument("--json", action="store_true", help="list as JSON")
    user_option(s)


async def cmd_sessions(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """List, reset or delete a user's sessions."""
    user = user_of(args)
    if args.action != "list" and not args.ids:
        raise UsageProblem(f"sessions {args.action} needs a session id (`{PROG} sessions list` shows them)")
    if args.action == "reset" and len(args.ids) > 1:
        raise UsageProblem("sessions reset takes one session id; `sessions delete` takes several")
    async with interpreter(settings, progress) as interp:
        if args.action == "list":
            rows = await interp.sessions.list(user)
            if args.json:
                print(json.dumps(rows, indent=2))
            elif not rows:
                print(f"No sessions for user {user}.")
            for row in [] if args.json else rows:
                where = f"live on {row['host']}" if row["state"] == "live" else "saved"
                size = f"{row['size']:,} bytes" if row.get("size") else "no snapshot yet"
                print(
                    f"{row['id']}  {where}  {row['cells']} cells  {size}  saved {row.get('saved_at') or '-'}"
                )
            return 0
        missing = [sid for sid in args.ids if not await interp.sessions.reset(user, sid)]
        for sid in args.ids:
            if sid not in missing:
                print(f"{'reset' if args.action == 'reset' else 'deleted'} {sid}")
        if missing:
            print(f"{PROG}: error: no such session of user {user!r}: {', '.join(missing)}")
            return 1
        return 0
