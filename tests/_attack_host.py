"""A host as its own OS process, for "the host is killed" (issue #22): it runs one cell and then waits.

``python _attack_host.py SETTINGS_JSON USER SESSION_ID CODE_FILE [WHEN]`` starts a CodeInterpreter with
the settings given (as JSON: field -> value), runs the code in the file as the first cell of that user's
session, prints one JSON line (the result's ``success``, ``output`` and ``error``, and the session's
``pids`` from ``sessions.list()``) and then sleeps until it is killed: the test kills it with SIGKILL,
so nothing of it gets to clean up. ``WHEN`` is ``idle`` (the default: the session waits for its next
cell) or ``closing`` (an end path is under way: the host started closing the session, which saves it,
half a second before it reports).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings


async def main(values: dict[str, Any], user: str, session_id: str, code: str, when: str) -> None:
    for key in ("home", "runtime_dir"):
        values[key] = Path(values[key])
    interp = CodeInterpreter(Settings(**values))
    await interp.start()
    result = await interp.execute(code, user, session_id=session_id)
    listed = [s for s in await interp.sessions.list(user) if s["id"] == session_id]
    report = {key: result[key] for key in ("success", "output", "error")}
    report["pids"] = listed[0]["pids"] if listed else None
    if when == "closing":
        closing = asyncio.create_task(interp.sessions.close(user, session_id))
        await asyncio.sleep(0.5)
        report["closing_done"] = closing.done()
    print(json.dumps(report), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    settings_json, user, session_id, code_file = sys.argv[1:5]
    when = sys.argv[5] if len(sys.argv) > 5 else "idle"
    asyncio.run(main(json.loads(settings_json), user, session_id, Path(code_file).read_text(), when))
