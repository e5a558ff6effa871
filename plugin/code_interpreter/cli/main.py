"""The ``code-interpreter`` command line: demo, run, files, cleanup, status, tokens, chat.

Settings come from the environment (``CODE_INTERPRETER_*``, ``MONGODB_URI``; unset, an embedded
SecantusDB runs under the data directory). Errors print one line on stderr and exit non-zero:
1 for a failed operation, 2 for a usage problem (bad arguments, missing API key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CodeInterpreterError
from ..settings import Settings
from .util import StderrProgress, UsageProblem, estimate_line, read_local, sample, save_files

__all__ = ["main"]

PROG = "code-interpreter"
DEFAULT_OUTPUT = Path("code-interpreter-output")
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_USER = "cli"


def _interp(settings: Settings, progress: StderrProgress | None) -> Any:
    from ..interpreter import CodeInterpreter

    return CodeInterpreter(settings, progress=progress)


# -- commands ----------------------------------------------------------------------------
DEMO_CODE = """\
import pandas as pd
import matplotlib.pyplot as plt

df = load_file({file_id!r})
df["date"] = pd.to_datetime(df["date"])
print(f"{{len(df)}} sales, {{df['date'].min():%Y-%m-%d}} to {{df['date'].max():%Y-%m-%d}}")
print(df[["units", "unit_price", "revenue"]].describe().round(2).to_string())
print()
print("Revenue by region:")
print(df.groupby("region")["revenue"].sum().sort_values(ascending=False).round(2).to_string())
monthly = df.set_index("date")["revenue"].resample("MS").sum()
fig, ax = plt.subplots(figsize=(8, 4))
ax.bar(monthly.index.strftime("%Y-%m"), monthly.values, color="#4C72B0")
ax.set_title("Revenue by month")
ax.set_ylabel("USD")
fig.tight_layout()
fig.savefig("revenue_by_month.png", dpi=100)
plt.close(fig)
print()
print(f"Total revenue: {{df['revenue'].sum():,.2f}} USD; chart saved as revenue_by_month.png")
"""


async def cmd_demo(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Upload the sample CSV, send a scripted tool call as a model would, print output and estimate."""
    from ..tools import ToolContext, ToolDispatcher, tool_definitions

    out_dir: Path = args.output
    async with _interp(settings, progress) as interp:
        where = "MONGODB_URI" if settings.mongodb_uri else f"embedded SecantusDB under {settings.home}"
        print(f"Database: {where}", flush=True)
        up = await interp.files.upload_file(args.user_id, sample("sales.csv"), "sales.csv")
        if not up.get("success"):
            raise CodeInterpreterError(f"uploading the sample failed: {up.get('error')}")
        file_id = up["file_id"]
        print(f"Uploaded sales.csv as {file_id}")
        code = DEMO_CODE.format(file_id=file_id)
        call = {
            "id": "call_demo_1",
            "type": "function",
            "function": {
                "name": "execute_python_code",
                "arguments": json.dumps({"code": code, "timeout": 120, "install_packages": None}),
            },
        }
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": "You are a data analyst. Use execute_python_code to analyse files.",
            },
            {"role": "user", "content": f"Summarise my sales file ({file_id}) and chart revenue by month."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ]
        print("Running the tool call (the first run creates the sandbox runtime)...", flush=True)
        started = time.perf_counter()
        context = ToolContext(user_id=args.user_id, allowed_file_ids=frozenset({file_id}), model=args.model)
        result = await ToolDispatcher(interp).dispatch(call, context)
        progress.done()
        print(f"\n--- tool result for the model ({time.perf_counter() - started:.1f} s) ---")
        print(result.content)
        messages.append(result.message)
        estimate = await interp.token_counter.estimate(args.model, messages, tools=tool_definitions("chat"))
        print(f"\n--- token estimate for the next request ({args.model}) ---")
        print(estimate_line(estimate))
        saved = save_files(result.generated_files, out_dir)
        for path in saved:
            print(f"Saved {path}")
        if result.is_error:
            return 1
        if not any(p.suffix == ".png" for p in saved):
            raise CodeInterpreterError("the demo produced no PNG chart")
        print(f"\nGenerated files are in {out_dir}")
    return 0


async def cmd_run(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Execute a script with data files and save what it generates."""
    script: Path = args.script
    code = (await read_local(script)).decode("utf-8", "replace")
    datas = [(p, await read_local(p)) for p in args.file]
    async with _interp(settings, progress) as interp:
        ids = []
        for p, data in datas:
            up = await interp.files.upload_file(args.user_id, data, p.name)
            if not up.get("success"):
                raise CodeInterpreterError(f"uploading {p} failed: {up.get('error')}")
            ids.append(up["file_id"])
            print(f"# {p.name}: load_file({up['file_id']!r}) or load_file({p.name!r})", file=sys.stderr)
        result = await interp.execute(
            code,
            user_id=args.user_id,
            user_files=ids,
            install_packages=args.install or None,
            timeout=args.timeout,
        )
        progress.done()
    if result.get("output"):
        sys.stdout.write(result["output"] if result["output"].endswith("\n") else result["output"] + "\n")
    if result.get("error"):
        sys.stderr.write(str(result["error"]).rstrip("\n") + "\n")
    for note in result.get("notes") or ():
        print(f"note: {note}", file=sys.stderr)
    for path in save_files(result.get("generated_files") or [], args.output):
        print(f"saved {path}", file=sys.stderr)
    return 0 if result.get("success") else 1


async def cmd_files(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """List, upload or delete a user's files."""
    async with _interp(settings, progress) as interp:
        if args.action == "list":
            files = await interp.files.list_user_files(args.user_id)
            if args.json:
                print(json.dumps(files, indent=2))
            elif not files:
                print(f"No files for user {args.user_id}.")
            for f in [] if args.json else files:
                size = f"{f['file_size']:>10,}"
                print(
                    f"{f['file_id']}  {size}  {f['file_type']:<8} {f['filename']}  expires {f['expires_at']}"
                )
            return 0
        if args.action == "upload":
            status = 0
            for p in args.paths:
                data = await read_local(p)
                up = await interp.files.upload_file(args.user_id, data, Path(p).name)
                if up.get("success"):
                    print(f"{up['file_id']}  {Path(p).name}")
                else:
                    print(f"{PROG}: error: {p}: {up.get('error')}", file=sys.stderr)
                    status = 1
            return status
        missing = [fid for fid in args.paths if not await interp.files.delete_user_file(fid, args.user_id)]
        for fid in args.paths:
            if fid not in missing:
                print(f"deleted {fid}")
        if missing:
            print(f"{PROG}: error: not found (or not yours): {', '.join(missing)}", file=sys.stderr)
            return 1
        return 0


async def cmd_cleanup(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Delete expired files."""
    async with _interp(settings, progress) as interp:
        print(f"Deleted {await interp.files.cleanup_expired_files()} expired file(s).")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Print the interpreter status as JSON."""
    async with _interp(settings, progress) as interp:
        print(json.dumps(await interp.status(), indent=2, default=str))
    return 0


async def cmd_tokens(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Estimate tokens and cost of a Chat Completions request body."""
    from ..tokens import TokenCounter

    raw = await read_local(args.request)
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"{args.request} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise UsageProblem(f"{args.request} must be a Chat Completions request body with a 'messages' list")
    model = args.model or body.get("model")
    if not model:
        raise UsageProblem("the request has no 'model'; pass --model")
    counter = TokenCounter(settings=settings)
    estimate = await counter.estimate(
        model,
        body["messages"],
        tools=body.get("tools"),
        tool_choice=body.get("tool_choice"),
        max_output_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
    )
    if args.json:
        print(json.dumps(estimate.to_dict(), indent=2, default=str))
    else:
        print(f"{model}: {estimate_line(estimate)}")
    return 0


async def cmd_chat(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Chat with a model that can run code (needs OPENAI_API_KEY; OPENAI_BASE_URL is honoured)."""
    from .chat import chat

    return await chat(args, settings, progress, _interp(settings, progress))


# -- entry point ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(prog=PROG, description="A sandboxed execute_python_code tool for LLM agents.")
    p.add_argument(
        "--user-id", default=DEFAULT_USER, help=f"user the files belong to (default {DEFAULT_USER!r})"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run the scripted demo: sample CSV, a tool call, a chart (no API key)")
    d.add_argument(
        "--output",
        "--out",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to save the chart ({DEFAULT_OUTPUT})",
    )
    d.add_argument("--model", default=DEFAULT_MODEL, help=f"model for the token estimate ({DEFAULT_MODEL})")

    r = sub.add_parser("run", help="execute a Python file in the sandbox")
    r.add_argument("script", type=Path, metavar="FILE")
    r.add_argument(
        "--file", type=Path, action="append", default=[], metavar="DATA", help="a data file (repeatable)"
    )
    r.add_argument("--timeout", type=int, default=None, help="wall-clock seconds")
    r.add_argument(
        "--install", action="append", default=[], metavar="PACKAGE", help="approved package to install"
    )
    r.add_argument(
        "--output",
        "--out",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to save generated files ({DEFAULT_OUTPUT})",
    )

    f = sub.add_parser("files", help="list, upload or delete stored files")
    f.add_argument("action", choices=["list", "upload", "delete"])
    f.add_argument("paths", nargs="*", metavar="PATH_OR_ID", help="files to upload, or file ids to delete")
    f.add_argument("--json", action="store_true", help="list as JSON")

    sub.add_parser("cleanup", help="delete expired files")
    sub.add_parser("status", help="show storage, sandbox and runtime status as JSON")

    t = sub.add_parser("tokens", help="estimate tokens and cost of a Chat Completions request body")
    t.add_argument("request", metavar="REQUEST.json")
    t.add_argument("--model", default=None, help="override the body's model")
    t.add_argument("--json", action="store_true", help="print the full estimate as JSON")

    c = sub.add_parser("chat", help="chat with a model that runs code (needs OPENAI_API_KEY)")
    c.add_argument("prompt", nargs="?", default=None, help="one prompt (default: read prompts from stdin)")
    c.add_argument("--model", default=os.environ.get("OPENAI_MODEL", DEFAULT_MODEL), help="model name")
    c.add_argument(
        "--file", type=Path, action="append", default=[], metavar="DATA", help="a data file (repeatable)"
    )
    c.add_argument("--max-rounds", type=int, default=8, help="most model requests per prompt (8)")
    c.add_argument(
        "--output",
        "--out",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to save generated files ({DEFAULT_OUTPUT})",
    )
    return p


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "files": cmd_files,
    "cleanup": cmd_cleanup,
    "status": cmd_status,
    "tokens": cmd_tokens,
    "chat": cmd_chat,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "files" and args.action in ("upload", "delete") and not args.paths:
        parser.error(
            f"files {args.action} needs at least one {'path' if args.action == 'upload' else 'file id'}"
        )
    if isinstance(getattr(args, "output", None), Path):
        args.output = args.output.resolve()  # printed paths then say exactly where files went
    progress = StderrProgress()
    try:
        settings = Settings.from_env()
        return asyncio.run(COMMANDS[args.command](args, settings, progress))
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
