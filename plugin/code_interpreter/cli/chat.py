"""``code-interpreter chat``: the agent loop in a terminal (OPENAI_API_KEY; OPENAI_BASE_URL honoured).

The model's answers go to stdout; everything else goes to stderr, as an interactive interpreter's
banner and prompts do: the banner (model, user, session, sandbox, files), the ``you>`` prompt when
stdin is a terminal, the code each tool call runs and its output as it comes, and per prompt the
requests, tokens and saved files. Each conversation is one code session whose id the banner shows:
``--session-id`` resumes it later, its messages and its variables (see :mod:`.conversations`). Its
code reads only the files given to this conversation with ``--file``, never the user's other files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from ..agent import run_agent
from ..settings import Settings
from ..tools import ToolContext, ToolDispatcher
from .conversations import Conversation, ConversationStore
from .output import LivePrinter

__all__ = ["chat"]

SYSTEM = (
    "You are a helpful data analyst. When a question needs computation or a chart, call "
    "execute_python_code; the user's files are listed below."
)
PROMPT = "you> "


async def chat(args: argparse.Namespace, settings: Settings, progress: Any, interp_cm: Any) -> int:
    """Run prompts (one from the command line, or one per stdin line) through run_agent."""
    from .commands import user_of
    from .util import UsageProblem

    if not os.environ.get("OPENAI_API_KEY"):
        raise UsageProblem(
            "chat needs OPENAI_API_KEY (and optionally OPENAI_BASE_URL for another provider); "
            "`code-interpreter demo` runs without one"
        )
    _check_session_id(args.session_id)
    import openai

    client = openai.AsyncOpenAI(max_retries=0)  # run_agent's tenacity policy owns the retries
    user = user_of(args)
    async with interp_cm as interp:
        store = ConversationStore(interp.db, settings)
        await store.ensure_indexes()
        convo = await _open(store, interp, user, args)
        _banner(args, client, user, convo, interp)
        try:
            return await _converse(args, client, interp, store, user, convo, progress)
        except openai.APIConnectionError as exc:
            print(
                f"code-interpreter: error: cannot reach the model API at {client.base_url} ({exc}); "
                "check OPENAI_BASE_URL and the network",
                file=sys.stderr,
            )
            return 1
        except openai.APIError as exc:
            print(
                f"code-interpreter: error: the model API at {client.base_url} failed: {exc}", file=sys.stderr
            )
            return 1
        finally:
            await client.close()
            print(f"resume this conversation with: code-interpreter chat --session-id {convo.session_id}",
                  file=sys.stderr)  # fmt: skip


async def _converse(
    args: argparse.Namespace,
    client: Any,
    interp: Any,
    store: ConversationStore,
    user: str,
    convo: Conversation,
    progress: Any,
) -> int:
    from .util import save_files

    # One session per conversation (its variables and files carry over), and only its own files.
    context = ToolContext(
        user_id=user,
        session_id=convo.session_id,
        model=args.model,
        allowed_file_ids=frozenset(convo.file_ids),
    )
    shown = _Shown()
    async for prompt in _prompts(args):
        convo.messages.append({"role": "user", "content": prompt})
        result = await run_agent(
            client, args.model, convo.messages, context, max_rounds=args.max_rounds,
            dispatcher=_ShowingDispatcher(interp, shown), on_event=shown.printer,
        )  # fmt: skip
        progress.done()
        convo.messages = result.messages
        await store.save(user, convo, args.model)
        print(result.final_text, flush=True)
        totals = result.usage_totals
        print(
            f"[{len(result.requests)} request(s), {totals['prompt_tokens']:,} prompt + "
            f"{totals['completion_tokens']:,} completion tokens; stop: {result.stop_reason}]",
            file=sys.stderr,
        )
        for path in save_files(result.generated_files, args.output):
            print(f"saved {path}", file=sys.stderr)
    return 0


async def _open(store: ConversationStore, interp: Any, user: str, args: argparse.Namespace) -> Conversation:
    """The conversation to continue (``--session-id`` of a saved one) or a new one, with --file uploads."""
    from .util import UsageProblem, for_cli, read_local

    sid = args.session_id or f"cli-chat-{uuid.uuid4().hex[:12]}"
    convo = (await store.load(user, sid) if args.session_id else None) or Conversation(sid)
    for p in args.file:
        up = await interp.files.upload_file(user, await read_local(p), Path(p).name)
        if not up.get("success"):
            raise UsageProblem(f"uploading {p} failed: {for_cli(str(up.get('error')))}")
        if up["file_id"] not in convo.file_ids:
            convo.file_ids.append(up["file_id"])
    files = [f for f in await interp.files.list_user_files(user) if f["file_id"] in set(convo.file_ids)]
    convo.file_names = [f["filename"] for f in files]
    listing = "\n".join(f"- {f['filename']}: file_id {f['file_id']}" for f in files) or "(no files uploaded)"
    system = {"role": "system", "content": f"{SYSTEM}\n{listing}"}
    if convo.messages and convo.messages[0].get("role") == "system":
        convo.messages[0] = system  # files added on resuming are listed too
    else:
        convo.messages.insert(0, system)
    return convo


def _banner(args: argparse.Namespace, client: Any, user: str, convo: Conversation, interp: Any) -> None:
    mode, why = interp.isolation
    state = (
        f"resumed ({sum(1 for m in convo.messages if m.get('role') == 'user')} earlier prompt(s))"
        if convo.resumed
        else f"new; resume it later with --session-id {convo.session_id}"
    )
    names = convo.file_names
    lines = [
        f"code-interpreter chat: {args.model} at {client.base_url}, as user {user!r}",
        f"session {convo.session_id} ({state})",
        f"sandbox: {mode} isolation ({why})",
        f"files: {', '.join(names)}" if names else "files: none (add them with --file DATA)",
    ]
    if not args.prompt:
        lines.append("Ask a question per line; end with Ctrl-D (end of input).")
    print("\n".join(lines), file=sys.stderr, flush=True)


async def _prompts(args: argparse.Namespace) -> Any:
    """The prompts: the command line's one, else each non-empty line of stdin (with a prompt on a tty)."""
    if args.prompt:
        yield args.prompt
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(PROMPT, end="", file=sys.stderr, flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            if interactive:
                print(file=sys.stderr)
            return
        if line.strip():
            yield line.strip()


def _check_session_id(session_id: str | None) -> None:
    from ..request import MAX_SESSION_ID
    from .util import UsageProblem

    if session_id is not None and not (0 < len(session_id) <= MAX_SESSION_ID and session_id.isprintable()):
        raise UsageProblem(
            f"--session-id must be 1 to {MAX_SESSION_ID} printable characters (the banner of an earlier "
            "chat shows its id)"
        )


class _Shown:
    """What the terminal shows of the tool calls: their code, then their output as it comes."""

    def __init__(self) -> None:
        self.printer = LivePrinter(out=sys.stderr, err=sys.stderr)

    def code(self, call_id: str, code: str) -> None:
        body = "\n".join(f"│ {line}" for line in code.rstrip("\n").splitlines())
        print(f"── the model runs (call {call_id}) ──\n{body}\n── output ──", file=sys.stderr, flush=True)


def _code_of(tool_call: Any) -> tuple[str, str] | None:
    """(call id, code) of a Chat Completions tool call, when its arguments are readable."""
    d = tool_call.model_dump() if hasattr(tool_call, "model_dump") else tool_call
    fn = d.get("function") if isinstance(d, dict) else None
    if not isinstance(fn, dict):
        return None
    try:
        args = json.loads(fn.get("arguments") or "{}")
    except (TypeError, ValueError):
        return None
    code = args.get("code") if isinstance(args, dict) else None
    return (str(d.get("id") or ""), code) if isinstance(code, str) else None


class _ShowingDispatcher(ToolDispatcher):
    """A ToolDispatcher that shows each call's code before it runs, and how it ended after."""

    def __init__(self, interp: Any, shown: _Shown) -> None:
        super().__init__(interp)
        self.shown = shown

    async def dispatch(self, tool_call: Any, context: Any, *, on_event: Any = None) -> Any:
        """Show the code, run the call as the ToolDispatcher does, then say how it ended."""
        found = _code_of(tool_call)
        if found is not None:
            self.shown.code(*found)
        result = await super().dispatch(tool_call, context, on_event=on_event)
        seconds = float(result.result.get("execution_time") or 0.0)
        ended = "failed" if result.is_error else "ok"
        print(f"── {ended} in {seconds:.2f} s ──", file=sys.stderr, flush=True)
        return result
