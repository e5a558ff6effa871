"""``code-interpreter chat``: the agent loop in a terminal (OPENAI_API_KEY; OPENAI_BASE_URL honoured)."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from ..settings import Settings

__all__ = ["chat"]

SYSTEM = (
    "You are a helpful data analyst. When a question needs computation or a chart, call "
    "execute_python_code; the user's files are listed below."
)


async def chat(args: argparse.Namespace, settings: Settings, progress: Any, interp_cm: Any) -> int:
    """Run prompts (one from the command line, or one per stdin line) through run_agent."""
    from .commands import user_of
    from .util import UsageProblem, for_cli, read_local, save_files

    if not os.environ.get("OPENAI_API_KEY"):
        raise UsageProblem(
            "chat needs OPENAI_API_KEY (and optionally OPENAI_BASE_URL for another provider); "
            "`code-interpreter demo` runs without one"
        )
    import openai

    from ..agent import run_agent
    from ..tools import ToolContext

    client = openai.AsyncOpenAI(max_retries=0)  # run_agent's tenacity policy owns the retries
    user = user_of(args)
    async with interp_cm as interp:
        file_lines = []
        for p in args.file:
            data = await read_local(p)
            up = await interp.files.upload_file(user, data, Path(p).name)
            if not up.get("success"):
                raise UsageProblem(f"uploading {p} failed: {for_cli(str(up.get('error')))}")
            file_lines.append(f"- {Path(p).name}: file_id {up['file_id']}")
        system = SYSTEM + ("\n" + "\n".join(file_lines) if file_lines else "\n(no files uploaded)")
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        # One session per conversation: the model's variables and files carry over between its calls.
        session_id = f"cli-chat-{uuid.uuid4().hex[:12]}"
        context = ToolContext(user_id=user, session_id=session_id, model=args.model)
        prompts = [args.prompt] if args.prompt else (line.strip() for line in sys.stdin)
        try:
            for prompt in prompts:
                if not prompt:
                    continue
                messages.append({"role": "user", "content": prompt})
                result = await run_agent(
                    client, args.model, messages, context, max_rounds=args.max_rounds, interpreter=interp
                )
                progress.done()
                messages = result.messages
                print(result.final_text, flush=True)
                totals = result.usage_totals
                print(
                    f"[{len(result.requests)} request(s), {totals['prompt_tokens']:,} prompt + "
                    f"{totals['completion_tokens']:,} completion tokens; stop: {result.stop_reason}]",
                    file=sys.stderr,
                )
                for path in save_files(result.generated_files, args.output):
                    print(f"saved {path}", file=sys.stderr)
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
    return 0
