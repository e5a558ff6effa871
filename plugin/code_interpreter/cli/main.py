"""The ``code-interpreter`` command line: the parser and the entry point.

Settings come from the environment (``CODE_INTERPRETER_*``, ``MONGODB_URI``; unset, an embedded
SecantusDB runs under the data directory). Every command starts the database and, when it runs
code, the sandbox: seconds per command (the millisecond figures of the README are those of a
long-running process). Errors print one line on stderr and exit non-zero: 1 for a failed
operation, 2 for a usage problem (bad arguments, missing API key).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CodeInterpreterError
from ..settings import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, Settings
from .commands import (
    DEFAULT_USER,
    FILE_ACTIONS,
    PROG,
    cmd_cleanup,
    cmd_demo,
    cmd_files,
    cmd_run,
    cmd_status,
    cmd_tokens,
    interpreter,
)
from .mcp import add_parser as add_mcp_parser
from .mcp import cmd_mcp
from .sessions import add_parser as add_sessions_parser
from .sessions import cmd_sessions
from .usage import GROUPS, cmd_usage
from .util import StderrProgress, UsageProblem

__all__ = ["build_parser", "main"]

DEFAULT_OUTPUT = Path("code-interpreter-output")
DEFAULT_MODEL = "gpt-4o-mini"

RUN_EPILOG = """\
how the script sees its files:
  each --file is visible by its name in the working directory (open('data.csv'),
  pd.read_csv('data.csv')), through load_file('<file_id>') or load_file('data.csv') (which picks
  the reader from the file type), and in the FILES dict {file_id: path}. A --file that is not a
  local path is taken as the id of a file stored for --user-id (see `code-interpreter files list`).

what it prints:
  the script's output as it comes (up to CODE_INTERPRETER_MAX_OUTPUT_BYTES, 100,000 bytes, per
  stream); past that, a marker saying how many bytes were not shown and the end of the output (the
  result keeps the first and last 50,000 bytes). Then notes on stderr, the sandbox's isolation mode
  among them. The exit code is the script's own (SystemExit(3) exits 3), 1 for any other failure
  (an exception, a timeout, a refused import), 2 for a usage problem.

what is kept:
  the inputs it uploads and the files the script writes are stored like any user's files: for
  CODE_INTERPRETER_FILE_EXPIRATION_HOURS (48 h by default) under --user-id ('cli' by default),
  counting against that user's quota. --no-store deletes both once the run is over (the generated
  files are still saved under --output).
"""


async def cmd_chat(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Chat with a model that can run code (needs OPENAI_API_KEY; OPENAI_BASE_URL is honoured)."""
    from .chat import chat

    return await chat(args, settings, progress, interpreter(settings, progress))


COMMANDS: dict[str, Any] = {
    "demo": cmd_demo,
    "run": cmd_run,
    "files": cmd_files,
    "sessions": cmd_sessions,
    "cleanup": cmd_cleanup,
    "status": cmd_status,
    "tokens": cmd_tokens,
    "usage": cmd_usage,
    "chat": cmd_chat,
    "mcp": cmd_mcp,
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _user_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # Accepted before the command and after it; SUPPRESS keeps one given before from being reset.
    where = "" if top else "; also accepted before the command"
    parser.add_argument(
        "--user-id",
        default=argparse.SUPPRESS,
        metavar="USER",
        help=f"the user whose files these are (default {DEFAULT_USER!r}{where})",
    )


def _output_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--output",
        "--out",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to save {what} ({DEFAULT_OUTPUT})",
    )


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The argument parser; help texts show the limits of ``settings`` (exposed for docs and tests)."""
    default_timeout = settings.default_timeout if settings else DEFAULT_TIMEOUT_S
    max_timeout = settings.max_timeout if settings else MAX_TIMEOUT_S
    p = argparse.ArgumentParser(prog=PROG, description="A sandboxed execute_python_code tool for LLM agents.")
    _user_option(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run the scripted demo: sample CSV, a tool call, a chart (no API key)")
    _output_option(d, "the chart")
    d.add_argument("--model", default=DEFAULT_MODEL, help=f"model for the token estimate ({DEFAULT_MODEL})")
    _user_option(d)

    _add_run_parser(sub, default_timeout, max_timeout)
    f = sub.add_parser("files", help="list, upload or delete stored files")
    f.add_argument("action", nargs="?", choices=FILE_ACTIONS, metavar="ACTION", help="list, upload or delete")
    f.add_argument("paths", nargs="*", metavar="PATH_OR_ID", help="files to upload, or file ids to delete")
    f.add_argument("--json", action="store_true", help="list as JSON")
    _user_option(f)

    add_sessions_parser(sub, _user_option)
    sub.add_parser("cleanup", help="delete expired files")
    sub.add_parser("status", help="show storage, sandbox and runtime status as JSON")

    t = sub.add_parser("tokens", help="estimate tokens and cost of a Chat Completions request body")
    t.add_argument("request", metavar="REQUEST.json", help="the request body as JSON; - reads it from stdin")
    t.add_argument("--model", default=None, help="override the body's model")
    t.add_argument("--json", action="store_true", help="print the full estimate as JSON")

    u = sub.add_parser(
        "usage", help="tokens and sandbox cost per user, day, model or session; --html writes a report"
    )
    u.add_argument(
        "--by", choices=GROUPS, default="model", help="group by user, UTC day, model or session (model)"
    )
    u.add_argument("--since", metavar="DATE", help="only records from this date (YYYY-MM-DD) or time on")
    u.add_argument("--json", action="store_true", help="print the rows as JSON")
    u.add_argument(
        "--html", type=Path, metavar="FILE", help="write a self-contained HTML report with charts to FILE"
    )
    u.add_argument("--user-id", default=argparse.SUPPRESS, metavar="USER", help="only this user's records")

    model = os.environ.get("OPENAI_MODEL", DEFAULT_MODEL)
    c = sub.add_parser("chat", help="chat with a model that runs code (needs OPENAI_API_KEY)")
    c.add_argument("prompt", nargs="?", default=None, help="one prompt (default: read prompts from stdin)")
    c.add_argument("--model", default=model, help=f"model name (default {model}; env OPENAI_MODEL)")
    c.add_argument(
        "--file", type=Path, action="append", default=[], metavar="DATA", help="a data file (repeatable)"
    )
    c.add_argument("--max-rounds", type=int, default=8, help="most model requests per prompt (8)")
    c.add_argument(
        "--session-id",
        default=None,
        metavar="ID",
        help="continue a saved conversation (its messages and variables): the id an earlier chat showed",
    )
    _output_option(c, "generated files")
    _user_option(c)
    add_mcp_parser(sub)
    return p


def _add_run_parser(sub: Any, default_timeout: int, max_timeout: int) -> None:
    r = sub.add_parser(
        "run",
        help="execute a Python file in the sandbox",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("script", type=Path, metavar="FILE", help="the Python script to run")
    r.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="DATA",
        help="a local data file, or the id of a stored file (repeatable)",
    )
    r.add_argument(
        "--timeout",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help=f"wall-clock limit (default {default_timeout}, at most {max_timeout}; "
        "CODE_INTERPRETER_MAX_TIMEOUT raises it)",
    )
    r.add_argument(
        "--install", action="append", default=[], metavar="PACKAGE", help="approved package to install"
    )
    r.add_argument(
        "--no-store", action="store_true", help="keep no copy of the inputs and outputs (see below)"
    )
    _output_option(r, "generated files")
    _user_option(r)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings) -> None:
    """Usage errors argparse cannot see, each saying what to pass."""
    if args.command == "files":
        if args.action is None:
            parser.error(f"files needs an action: {', '.join(FILE_ACTIONS)} (e.g. `{PROG} files list`)")
        if args.action == "upload" and not args.paths:
            parser.error("files upload needs the path of at least one local file to upload")
        if args.action == "delete" and not args.paths:
            parser.error(f"files delete needs the id of at least one file (`{PROG} files list` shows them)")
    if args.command == "run" and args.timeout is not None and args.timeout > settings.max_timeout:
        parser.error(
            f"--timeout {args.timeout} exceeds the maximum of {settings.max_timeout} s "
            "(raise it with CODE_INTERPRETER_MAX_TIMEOUT)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        settings: Settings | None = Settings.from_env()
        problem = None
    except CodeInterpreterError as exc:  # a bad CODE_INTERPRETER_* value: still show --help
        settings, problem = None, exc
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    if settings is None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    _check(parser, args, settings)
    if isinstance(getattr(args, "output", None), Path):
        args.output = args.output.resolve()  # printed paths then say exactly where files went
    progress = StderrProgress()
    try:
        return int(asyncio.run(COMMANDS[args.command](args, settings, progress)))
    except UsageProblem as exc:
        progress.done()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except CodeInterpreterError as exc:
        progress.done()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.done()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `code-interpreter status | head`: the reader has gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
