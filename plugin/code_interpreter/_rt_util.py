"""Private helpers of the runtime manager: locks, subprocesses, atomic JSON, permissions, paths."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import stat
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import PackageInstallError

ProgressCallback = Callable[[str, float | None], None]
"""Progress reporting: (message, fraction 0..1 or None when unknown)."""

OUTPUT_TAIL_LINES = 40

# -- locks ----------------------------------------------------------------------------------------------

_async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _async_lock(key: Path) -> asyncio.Lock:
    # asyncio locks belong to a loop; keying by loop keeps a second asyncio.run() working.
    per_loop = _async_locks.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(key, asyncio.Lock())


@contextlib.asynccontextmanager
async def _file_lock(lock_file: Path, poll_s: float = 0.05) -> AsyncIterator[None]:
    """An exclusive flock held across processes, polled so the event loop never blocks on it."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.asynccontextmanager
async def root_lock(root: Path) -> AsyncIterator[None]:
    """Serialise builds and swaps of one runtime root, within this process and across processes."""
    async with _async_lock(root), _file_lock(root / ".lock"):
        yield


@contextlib.asynccontextmanager
async def generation_lock(gen: Path) -> AsyncIterator[None]:
    """Serialise pip runs into one runtime generation, within this process and across processes."""
    async with _async_lock(gen), _file_lock(gen / ".install.lock"):
        yield


# -- subprocesses --------------------------------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    # Host python settings must not leak into the runtime interpreter; PIP_* settings are kept on purpose.
    env = dict(os.environ)
    for k in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "__PYVENV_LAUNCHER__"):
        env.pop(k, None)
    return env


async def _run(cmd: Sequence[str], *, timeout: float, what: str) -> str:  # noqa: ASYNC109
    code, out = await _run_streaming(cmd, timeout=timeout)
    if code != 0:
        tail = "\n".join(out.strip().splitlines()[-OUTPUT_TAIL_LINES:])
        raise PackageInstallError(f"Could not {what} (exit status {code}): {tail}")
    return out


async def _run_streaming(
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


# -- small helpers -------------------------------------------------------------------------------------


def _no_progress(message: str, fraction: float | None) -> None:
    pass


def _scaled(report: ProgressCallback, lo: float, hi: float) -> ProgressCallback:
    def inner(message: str, fraction: float | None) -> None:
        report(message, None if fraction is None else lo + (hi - lo) * fraction)

    return inner


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file, fsync and rename, so readers never see a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _chmod_world_readable(top: Path, recursive: bool = True) -> None:
    """Add o+r to files and o+rx to directories (and o+x to owner-executable files)."""

    def fix(p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        mode = st.st_mode | stat.S_IROTH
        if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
            mode |= stat.S_IXOTH
        if mode != st.st_mode:
            with contextlib.suppress(OSError):
                os.chmod(p, stat.S_IMODE(mode))

    fix(str(top))
    if not recursive:
        return
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            fix(os.path.join(dirpath, name))


def _safe_resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return p


def _symlink_chain_dirs(p: Path) -> list[Path]:
    """Directories each hop of a symlink chain lands in (the real binary's directory last)."""
    out: list[Path] = []
    cur = p
    for _ in range(40):
        try:
            target = os.readlink(cur)
        except OSError:
            break
        cur = cur.parent / target if not os.path.isabs(target) else Path(target)
        out.append(cur.parent)
    out.append(_safe_resolve(p).parent)
    return out


def _drop_nested(paths: list[Path]) -> list[Path]:
    keep: list[Path] = []
    for p in sorted(set(paths), key=lambda x: len(x.parts)):
        if not any(p == k or k in p.parents for k in keep):
            keep.append(p)
    return keep
