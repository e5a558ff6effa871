"""Running the host-side commands of the runtime manager (venv, pip, ldd) in their own process group."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import PackageInstallError

__all__ = ["OUTPUT_TAIL_LINES", "run_command", "run_streaming"]

OUTPUT_TAIL_LINES = 40


def _subprocess_env() -> dict[str, str]:
    # Host python settings must not leak into the runtime interpreter; PIP_* settings are kept on purpose.
    env = dict(os.environ)
    for k in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "__PYVENV_LAUNCHER__"):
        env.pop(k, None)
    return env


async def run_command(cmd: Sequence[str], *, timeout: float, what: str) -> str:  # noqa: ASYNC109
    code, out = await run_streaming(cmd, timeout=timeout)
    if code != 0:
        tail = "\n".join(out.strip().splitlines()[-OUTPUT_TAIL_LINES:])
        raise PackageInstallError(f"Could not {what} (exit status {code}): {tail}")
    return out


async def run_streaming(
    cmd: Sequence[str],
    *,
    timeout: float,  # noqa: ASYNC109 - also bounds the kill of the process group, not just the await
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, str]:
    """Run ``cmd`` (stdout+stderr merged) in its own process group; kill the group on timeout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_subprocess_env(),
            start_new_session=True,
        )
    except OSError as exc:
        raise PackageInstallError(f"Could not start {cmd[0]}: {exc}") from exc
    lines: collections.deque[str] = collections.deque(maxlen=2000)
    assert proc.stdout is not None

    async def pump() -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if on_line is not None:
                on_line(line)
        await proc.wait()

    try:
        async with asyncio.timeout(timeout):
            await pump()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise PackageInstallError(
            f"{Path(cmd[0]).name} {' '.join(cmd[1:4])} … did not finish within {timeout:.0f} s "
            "and was stopped; raise pip_timeout (CODE_INTERPRETER_PIP_TIMEOUT) or check the package index"
        ) from None
    except BaseException:
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    return proc.returncode if proc.returncode is not None else -1, "".join(lines)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
