"""``code-interpreter sessions``: a user's sessions as every host sees them, through the real command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _interp_helpers import started
from code_interpreter.executor.ownership import HANDOFF_POLL_S
from code_interpreter.settings import Settings
from test_cli import cli_env, run_cli

__all__ = ["cli_env"]


async def test_list_shows_live_and_saved_sessions_and_reset_forgets_one(
    tmp_path: Path,
    cli_env: dict[str, str],
    make_settings: Callable[..., Settings],
    sandbox_runtime: Any,
) -> None:
    host = await started(make_settings(runtime_dir=sandbox_runtime.root))
    try:
        for sid, code in (("kept", "a = 1"), ("live", "b = 2")):
            assert (await host.execute(code, "u7", session_id=sid))["success"]
        assert await host.sessions.close("u7", "kept")
        listed = run_cli("--user-id", "u7", "sessions", "list", "--json", env=cli_env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        rows = {r["id"]: r for r in json.loads(listed.stdout)}
        assert rows["kept"]["state"] == "saved" and rows["kept"]["host"] is None and rows["kept"]["size"] > 0
        assert rows["live"]["state"] == "live" and rows["live"]["host"] == host.sessions.host
        assert rows["kept"]["cells"] == 1
        text = run_cli("--user-id", "u7", "sessions", env=cli_env, cwd=tmp_path)  # list is the default
        assert "kept  saved  1 cells" in text.stdout and f"live on {host.sessions.host}" in text.stdout

        reset = run_cli("--user-id", "u7", "sessions", "reset", "kept", env=cli_env, cwd=tmp_path)
        assert reset.returncode == 0 and reset.stdout.strip() == "reset kept", reset.stderr
        again = await host.execute("print(a)", "u7", session_id="kept")
        assert again["session"]["state"] == "new" and "NameError" in again["error"]

        # A session reset from another process stops its live copy here too: its state is gone.
        gone = run_cli("--user-id", "u7", "sessions", "delete", "live", env=cli_env, cwd=tmp_path)
        assert gone.returncode == 0 and gone.stdout.strip() == "deleted live", gone.stderr
        await asyncio.sleep(HANDOFF_POLL_S * 5)  # the owner looks at its leases every HANDOFF_POLL_S
        after = await host.execute("print(b)", "u7", session_id="live")
        assert "NameError" in after["error"], after

        missing = run_cli("--user-id", "u7", "sessions", "reset", "nope", env=cli_env, cwd=tmp_path)
        assert missing.returncode == 1 and "no such session" in missing.stdout
        usage = run_cli("sessions", "reset", env=cli_env, cwd=tmp_path)
        assert usage.returncode == 2 and "needs a session id" in usage.stderr
    finally:
        await host.close()
