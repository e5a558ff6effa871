"""A host as its own OS process, for "the host is killed" (issue #22): it runs one cell and then waits.

``python _attack_host.py SETTINGS_JSON USER SESSION_ID CODE_FILE`` starts a CodeInterpreter with the
settings given (as JSON: field -> value), runs the code in the file as the first cell of that user's
session, prints one JSON line (the result's ``success``, ``output`` and ``error``, and the session's
``pids`` from ``sessions.list()``) and then sleeps until it is killed: the test kills it with SIGKILL,
so nothing of it gets to clean up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings


async def main(values: dict[str, Any], user: str, session_id: str, code: str) -> None:
    for key in ("home", "runtime_dir"):
        values[key] = Path(values[key])
    interp = CodeInterpreter(Settings(**values))
    await interp.start()
    result = await interp.execute(code, user, session_id=session_id)
    listed = [s for s in await interp.sessions.list(user) if s["id"] == session_id]
    report = {key: result[key] for key in ("success", "output", "error")}
    report["pids"] = listed[0]["pids"] if listed else None
    print(json.dumps(report), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    settings_json, user, session_id, code_file = sys.argv[1:5]
    asyncio.run(main(json.loads(settings_json), user, session_id, Path(code_file).read_text()))
