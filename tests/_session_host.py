"""A host for the multi-host tests: one CodeInterpreter in its own OS process, driven over stdin/stdout.

    python tests/_session_host.py <settings as JSON>

Each line on stdin is a JSON request ``{"id", "op": "run", "user", "sid", "code", "timeout"}`` (run
concurrently: each its own task), ``{"id", "op": "close", "user", "sid"}`` or ``{"id", "op": "quit"}``;
each answer is one JSON line ``{"id", "result": …}`` on stdout. ``ready <host id>`` is printed once the
interpreter and its sandbox are up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from code_interpreter import CodeInterpreter, Settings


async def main(raw: str) -> None:
    settings = Settings(**json.loads(raw))
    async with CodeInterpreter(settings) as interp:
        await interp.executor()
        print(f"ready {interp.sessions.host}", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "quit":
                break
            task = asyncio.create_task(answer(interp, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)


async def answer(interp: CodeInterpreter, request: dict[str, Any]) -> None:
    if request["op"] == "run":
        result = await interp.execute(
            request["code"], request["user"], timeout=request.get("timeout", 30), session_id=request["sid"]
        )
        result.pop("generated_files", None)
    else:
        result = {"closed": await interp.sessions.close(request["user"], request["sid"])}
    print(json.dumps({"id": request["id"], "result": result}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
