"""The embedded server's watchdog: stop the server once no process has used it for a grace period.

Run as a script (``python -I _watchdog.py ROOT IDLE_S -- SERVER_CMD...``), never imported: it
uses the standard library only, so it costs a few MB for as long as the server runs.

Every process using the embedded server holds a shared ``flock`` on ``ROOT/users.lock`` for as
long as it uses it; the kernel drops that lock when the process exits or is killed (kill -9
included). The watchdog samples the lock: while any shared holder exists it cannot take it
exclusively. Once it could take it at every sample for ``IDLE_S`` seconds, it keeps it (so no new
user can join), stops the server with SIGTERM (a clean shutdown: acknowledged, journaled writes
are on disk), waits for it, and exits, which releases the lock. A process arriving meanwhile
waits for its shared lock, then finds the server gone and starts a new one.

Start-up: the launched process forks; the child (the watchdog) starts a session of its own,
starts the server with a parent-death signal (SIGTERM if the watchdog itself is killed), writes
``{"server_pid", "watchdog_pid"}`` as one JSON line to stdout and stops writing there; the
launched process exits at once, so the watchdog is nobody's child to reap.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

POLL_S = 0.1
STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server's child before exec: SIGTERM when the watchdog dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog's SIGTERM handler still stops it
        pass


def _stop(server: subprocess.Popen[bytes]) -> int:
    """SIGTERM the server and wait for it (SIGKILL only if it hangs); its exit code."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


def watch(root: Path, idle_s: float, cmd: list[str], log_path: Path) -> int:
    """Start ``cmd`` and stop it once ``root/users.lock`` has had no shared holder for ``idle_s``."""
    users = os.open(root / "users.lock", os.O_RDWR | os.O_CREAT, 0o644)
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
    sys.stdout.write(json.dumps({"server_pid": server.pid, "watchdog_pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the launcher's pipe is closed once read: never write there again
    os.close(devnull)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(_stop(server))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    idle_since: float | None = None
    while True:
        if server.poll() is not None:
            return server.returncode  # it crashed or was killed: a user restarts it (recover)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None  # someone uses the server
        else:
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= idle_s:
                return _stop(server)  # still holding the lock: nobody joins while it stops
            fcntl.flock(users, fcntl.LOCK_UN)
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    """``ROOT IDLE_S -- SERVER_CMD...``: fork the watchdog, print its handshake, return at once."""
    root, idle, sep, *cmd = argv
    if sep != "--" or not cmd:
        print("usage: _watchdog.py ROOT IDLE_S -- SERVER_CMD...", file=sys.stderr)
        return 2
    if os.fork() != 0:
        return 0  # the launcher: its exit hands the watchdog to init
    os.setsid()
    try:
        code = watch(Path(root), float(idle), cmd, Path(root) / "server.log")
    except SystemExit as exc:  # SIGTERM/SIGINT: the server was stopped first
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the watchdog must never die with a traceback nobody reads
        import traceback

        with open(Path(root) / "server.log", "a") as log:
            traceback.print_exc(file=log)
        code = 1
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
