"""Leaks fail where they happen, named: a pytest plugin (loaded by conftest.py).

A client, socket, event loop or subprocess a test forgets to close is only noticed when the garbage
collector frees it, which is whenever the collector next runs; with ``filterwarnings = error`` the
``ResourceWarning`` then errors an innocent later test (issue #20). So:

- every socket, subprocess and event loop remembers where it was made (a short stack taken when it is
  created: a few thousand objects per run, unlike tracemalloc's every allocation, which doubled the
  suite's time); the warning that reports it carries that stack as a note;
- every test ends with a full collection, so what it left behind warns in its own teardown; what
  survives the test is then frozen out of later collections (cheap: each collection scans only new
  objects) and unfrozen at the end;
- at the end of the session every socket and pipe opened since it started must be closed again: the
  report lists each one left open, and where its Python object was made.

``PYTHONTRACEMALLOC=12`` adds pytest's own "Object allocated at" for every other kind of object.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

STACK_LIMIT = 12
# Keyed by id(), not weakly: the collector clears weak references to garbage *before* it runs the
# finalizer that warns. An id is only reused once its object is gone, and a new object of a tracked
# class writes its own entry, so the entry read in a finalizer is always that object's.
_made_at: dict[int, str] = {}
_FDS_AT_START = pytest.StashKey[dict[int, str]]()


def _remember(cls: type) -> None:
    """Wrap ``cls.__init__`` so each instance remembers the stack that made it."""
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        stack = traceback.extract_stack(limit=STACK_LIMIT + 1)[:-1]
        _made_at[id(self)] = "".join(traceback.format_list(stack))

    cls.__init__ = __init__  # type: ignore[misc]


def _origin(obj: Any) -> str | None:
    """Where ``obj`` (or the object whose ``__del__`` is reported) was made, if remembered."""
    target = getattr(obj, "__self__", obj)  # the unraisable hook may get a bound __del__
    return _made_at.get(id(target))


def _reported(unraisable: Any) -> Any:
    """The object an unraisable exception is about: the object itself (a socket's finalizer reports
    it), or the ``self`` of the Python ``__del__`` the warning was raised in (a subprocess, a loop)."""
    if _origin(unraisable.object):
        return unraisable.object
    tb = unraisable.exc_traceback
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if candidate is not None and _origin(candidate):
            return candidate
        tb = tb.tb_next
    return unraisable.object


def _pymongo_connect_cancelled(unraisable: Any) -> bool:
    """A socket pymongo's async monitor was still connecting when its client closed: a known upstream
    leak, not ours. ``_async_create_connection`` (pymongo 4.20) closes the socket on ``OSError`` and
    ``TimeoutError`` but not on ``CancelledError``, which is what closing the client raises in the
    monitor's ``sock_connect``. Narrow on purpose: made there, and never connected (a socket of a client
    a test forgot to close would have a peer)."""
    sock = unraisable.object
    if not isinstance(sock, socket.socket) or not isinstance(unraisable.exc_value, ResourceWarning):
        return False
    made = _origin(sock) or ""
    if "pymongo/pool_shared.py" not in made or "_async_create_connection" not in made:
        return False
    try:
        sock.getpeername()
    except OSError:
        return True
    return False


def _with_origin(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    def hook(unraisable: Any) -> object:
        if _pymongo_connect_cancelled(unraisable):
            return None
        made = _origin(_reported(unraisable))
        if made and unraisable.exc_value is not None:
            unraisable.exc_value.add_note(f"{_reported(unraisable)!r} was made at:\n{made}")
        return previous(unraisable)

    return hook


def _open_fds() -> dict[int, str]:
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory listing's own fd, closed meanwhile
    return out


def _owner(fd: int) -> str:
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and obj.fileno() == fd:
            return _origin(obj) or f"{obj!r} (made before the tests started)"
    return "no Python socket owns it (an os-level fd, a pipe or a file object)"


def pytest_configure(config: pytest.Config) -> None:
    for cls in (socket.socket, subprocess.Popen, asyncio.BaseEventLoop):
        _remember(cls)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # pytest's own unraisable hook is in place by now: ours adds the origin note, then hands over.
    sys.unraisablehook = _with_origin(sys.unraisablehook)
    session.config.stash[_FDS_AT_START] = _open_fds()


@pytest.fixture(autouse=True)
def _collect_what_the_test_left() -> Iterator[None]:
    """After each test, a full collection: an unclosed object warns (and fails) in this test's teardown."""
    yield
    gc.collect()
    # What survives the test is moved out of the collector's sight, so the next collection scans only
    # what later tests make; frozen cycles are collected at the end of the session.
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.unfreeze()
    gc.collect()
    before = session.config.stash.get(_FDS_AT_START, {})
    leaked = {
        fd: target
        for fd, target in _open_fds().items()
        if before.get(fd) != target and target.startswith(("socket:", "pipe:"))
    }
    if not leaked:
        return
    lines = [f"  fd {fd} -> {target}, made at:\n{_owner(fd)}" for fd, target in sorted(leaked.items())]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "file descriptors left open by the tests", red=True)
        reporter.write_line("close each where it is made:\n" + "\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
