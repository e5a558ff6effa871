"""The commands of ``code-interpreter``: demo, run, files, cleanup, status, tokens (chat and usage apart).

Each takes the parsed arguments, the settings and the progress bar, and returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import CodeInterpreterError
from ..settings import Settings
from .output import LivePrinter, exit_code, isolation_note, rest_of
from .util import StderrProgress, UsageProblem, estimate_line, for_cli, read_local, sample, save_files

__all__ = [
    "DEFAULT_USER",
    "cmd_cleanup",
    "cmd_demo",
    "cmd_files",
    "cmd_run",
    "cmd_status",
    "cmd_tokens",
    "interpreter",
    "storage_place",
]

PROG = "code-interpreter"
DEFAULT_USER = "cli"


def interpreter(settings: Settings, progress: StderrProgress | None) -> Any:
    """A CodeInterpreter (imported late: ``--help`` stays fast)."""
    from ..interpreter import CodeInterpreter

    return CodeInterpreter(settings, progress=progress)


def storage_place(settings: Settings) -> str:
    """Where files are stored, in words (never the URI's credentials)."""
    if settings.mongodb_uri:
        from ..storage import Storage

        return f"MongoDB at {Storage(settings).describe()['address']}"
    return f"the embedded SecantusDB under {settings.home / 'db'}"


def user_of(args: argparse.Namespace) -> str:
    """The user the command acts for: --user-id, before or after the command, else 'cli'."""
    return str(getattr(args, "user_id", None) or DEFAULT_USER)


def _kept_for(settings: Settings) -> str:
    hours = settings.file_expiration_hours
    return "until deleted" if hours is None else f"{hours:g} h"


# -- demo ---------------------------------------------------------------------------------------------
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
    user = user_of(args)
    async with interpreter(settings, progress) as interp:
        print(f"Database: {storage_place(settings)}", flush=True)
        print(f"Sandbox: {interp.isolation[0]} isolation ({interp.isolation[1]})", flush=True)
        up = await interp.files.upload_file(user, sample("sales.csv"), "sales.csv")
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
        if interp.packages.runtime.is_complete():
            print("Running the tool call...", flush=True)
        else:
            print(
                "Running the tool call (first creating the sandbox runtime: numpy, pandas, matplotlib …; "
                "once, about a minute)...",
                flush=True,
            )
        started = time.perf_counter()
        context = ToolContext(user_id=user, allowed_file_ids=frozenset({file_id}), model=args.model)
        result = await ToolDispatcher(interp).dispatch(call, context)
        progress.done()
        print(f"\n--- tool result for the model ({time.perf_counter() - started:.1f} s) ---")
        print(result.content)
        messages.append(result.message)
        tools = tool_definitions("chat", versions=interp.packages.runtime_versions())
        estimate = await interp.token_counter.estimate(args.model, messages, tools=tools)
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


# -- run ----------------------------------------------------------------------------------------------
async def cmd_run(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Execute a script with data files (local paths or stored file ids) and save what it generates."""
    from ..files.cache import FILE_ID_RE

    user = user_of(args)
    code = (await read_local(args.script)).decode("utf-8", "replace")
    local: list[tuple[Path, bytes]] = []
    stored: list[str] = []
    for item in args.file:
        path = Path(item)
        if item == "-":
            raise UsageProblem("--file - (stdin) is not supported: save the data to a file and pass its path")
        if await asyncio.to_thread(path.exists):
            local.append((path, await read_local(path)))
        elif FILE_ID_RE.fullmatch(item):
            stored.append(item)
        else:
            raise UsageProblem(
                f"--file {item}: no such local file, and not the id of a stored file either (ids look like "
                f"user_<user>_<time>_<hex>; `{PROG} files list --user-id {user}` shows {user!r}'s)"
            )
    async with interpreter(settings, progress) as interp:
        ids: list[str] = []
        uploaded: list[str] = []
        # --no-store removes what this run added, never a file the user had (an upload of the same
        # name and bytes, or an output identical to an earlier one, is that file).
        had = {f["file_id"] for f in await interp.files.list_user_files(user)} if args.no_store else set()
        for file_id in stored:
            meta = await interp.files.get_file(file_id, user)
            if meta is None:
                raise UsageProblem(
                    f"--file {file_id}: no such local file, and no stored file with that id for user "
                    f"{user!r} (see `{PROG} files list --user-id {user}`)"
                )
            ids.append(file_id)
            _tell(meta["filename"], file_id)
        for path, data in local:
            up = await interp.files.upload_file(user, data, path.name)
            if not up.get("success"):
                raise CodeInterpreterError(f"uploading {path} failed: {for_cli(str(up.get('error')))}")
            ids.append(up["file_id"])
            uploaded.append(up["file_id"])
            _tell(up["filename"], up["file_id"], bool(up.get("deduplicated")))
        live = LivePrinter(progress.done)
        result = await interp.execute(
            code,
            user_id=user,
            user_files=ids,
            install_packages=args.install or None,
            timeout=args.timeout,
            on_event=live,
        )
        progress.done()
        isolation = interp.isolation
        outputs = [g["file_id"] for g in result.get("generated_files") or () if g.get("file_id")]
        for file_id in sorted({*uploaded, *outputs} - had) if args.no_store else ():
            await interp.files.delete_user_file(file_id, user)
    _finish_streams(live, result)
    for note in result.get("notes") or ():
        print(f"note: {for_cli(str(note))}", file=sys.stderr)
    print(f"note: {isolation_note(result, isolation)}", file=sys.stderr)
    for path in save_files(result.get("generated_files") or [], args.output):
        print(f"saved {path}", file=sys.stderr)
    if (uploaded or outputs) and not args.no_store:
        print(
            f"note: {len(uploaded)} input(s) and {len(outputs)} output(s) stay stored "
            f"for {_kept_for(settings)} "
            f"under user {user!r} in {storage_place(settings)} (`{PROG} files list --user-id {user}`); "
            "--no-store keeps nothing",
            file=sys.stderr,
        )
    return exit_code(result)


def _finish_streams(live: LivePrinter, result: dict[str, Any]) -> None:
    """Print what the terminal has not shown of stdout and stderr, then the error if it is news."""
    out = rest_of(live.streamed["stdout"], str(result.get("output") or ""))
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
        sys.stdout.flush()
    kept_err = str(result.get("stderr") or "")
    err = rest_of(live.streamed["stderr"], kept_err)
    if err:
        sys.stderr.write(err if err.endswith("\n") else err + "\n")
    error = str(result.get("error") or "").strip()
    # A traceback is the script's stderr, already shown as it came (and its tail just now).
    if error and error != kept_err.strip() and error not in live.streamed["stderr"]:
        sys.stderr.write(for_cli(error) + "\n")


def _tell(name: str, file_id: str, same: bool = False) -> None:
    again = " (stored before: the same name and bytes, kept longer now)" if same else ""
    print(
        f"# {name}: open({name!r}) in the working directory, or load_file({file_id!r}){again}",
        file=sys.stderr,
    )


# -- files, cleanup, status -------------------------------------------------------------------------------
FILE_ACTIONS = ("list", "upload", "delete")


async def cmd_files(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """List, upload or delete a user's files."""
    user = user_of(args)
    async with interpreter(settings, progress) as interp:
        if args.action == "list":
            files = await interp.files.list_user_files(user)
            if args.json:
                print(json.dumps(files, indent=2))
            elif not files:
                print(f"No files for user {user}.")
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
                up = await interp.files.upload_file(user, data, Path(p).name)
                if up.get("success"):
                    print(f"{up['file_id']}  {Path(p).name}")
                else:
                    print(f"{PROG}: error: {p}: {up.get('error')}", file=sys.stderr)
                    status = 1
            return status
        missing = [fid for fid in args.paths if not await interp.files.delete_user_file(fid, user)]
        for fid in args.paths:
            if fid not in missing:
                print(f"deleted {fid}")
        if missing:
            print(
                f"{PROG}: error: not found (or not yours, as user {user!r}): {', '.join(missing)}; "
                f"`{PROG} files list --user-id USER` shows a user's file ids",
                file=sys.stderr,
            )
            return 1
        return 0


async def cmd_cleanup(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Delete expired files."""
    async with interpreter(settings, progress) as interp:
        print(f"Deleted {await interp.files.cleanup_expired_files()} expired file(s).")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Print the interpreter status as JSON."""
    async with interpreter(settings, progress) as interp:
        print(json.dumps(await interp.status(), indent=2, default=str))
    return 0


# -- tokens ---------------------------------------------------------------------------------------------
async def cmd_tokens(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Estimate tokens and cost of a Chat Completions request body (a file, or ``-`` for stdin)."""
    from ..tokens import TokenCounter

    name = "stdin" if args.request == "-" else args.request
    raw = await read_local(args.request)
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"{name} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise UsageProblem(f"{name} must be a Chat Completions request body with a 'messages' list")
    model = args.model or body.get("model")
    if not model:
        raise UsageProblem(f"{name} has no 'model'; pass --model")
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
