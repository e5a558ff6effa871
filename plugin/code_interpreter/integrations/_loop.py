"""Where an integration runs the interpreter's coroutines: on the event loop the interpreter lives on.

A started :class:`~code_interpreter.CodeInterpreter` belongs to the loop it was started on
(:attr:`CodeInterpreter.loop`): its database client and sandbox pipes are bound to it. Frameworks
call tools from many places — the caller's loop, a loop of their own per run (``run_sync``), worker
threads — so every call is run *there*: directly when the caller is on that loop, else handed over
with ``asyncio.run_coroutine_threadsafe``.

An interpreter not started yet is given a loop on first use: the caller's own (``claim``), or a
private loop in a daemon thread owned by the integrations (:func:`close_private` closes the
interpreter and stops it). A private loop is the safe choice whenever the caller's loop may stop
between calls (``Runner.run_sync``, ``Agent.run_sync``, synchronous agents).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["acall", "call", "close_private", "home", "running_loop"]

T = TypeVar("T")
Factory = Callable[[], Coroutine[Any, Any, T]]


class _PrivateLoop:
    """An event loop in a daemon thread, for an interpreter whose callers cannot lend it a lasting loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.loop.call_soon(ready.set)
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="code-interpreter-tools", daemon=True
        )
        self.thread.start()
        ready.wait()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        if not self.thread.is_alive():
            self.loop.close()


_lock = threading.Lock()
# Per interpreter: the loop chosen for it before start() has recorded one, and the integrations' own loop.
_claims: weakref.WeakKeyDictionary[CodeInterpreter, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()
_private: weakref.WeakKeyDictionary[CodeInterpreter, _PrivateLoop] = weakref.WeakKeyDictionary()


def home(interp: CodeInterpreter, claim: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The loop ``interp`` lives on; one not started yet is given ``claim`` (None: a private loop)."""
    with _lock:
        loop = interp.loop
        if loop is None:
            loop = _claims.get(interp)
            if loop is None or loop.is_closed():
                if claim is None:
                    own = _private.get(interp)
                    if own is None or own.loop.is_closed():
                        own = _private[interp] = _PrivateLoop()
                    claim = own.loop
                loop = _claims[interp] = claim
    if loop.is_closed():
        raise ConfigurationError(
            "the CodeInterpreter was started on an event loop that has been closed since; await "
            "interp.close() before that loop ends, or create a new CodeInterpreter for these tools"
        )
    return loop


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop of this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _not_running(loop: asyncio.AbstractEventLoop, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"the CodeInterpreter's event loop ({loop!r}) is not running, so {what} cannot run on it; "
        "call it while that loop runs (e.g. from a thread beside it), or start the interpreter "
        "on a loop that keeps running (or leave it unstarted: the tool then starts it on a loop of its own)"
    )


async def acall(interp: CodeInterpreter, factory: Factory[T], *, claim_caller: bool, what: str) -> T:
    """Await ``factory()`` on ``interp``'s loop from async code on any loop.

    ``claim_caller``: an interpreter not started yet is started on the caller's loop (else on a
    private one). ``what`` names the caller in errors.
    """
    running = asyncio.get_running_loop()
    loop = home(interp, running if claim_caller else None)
    if loop is running:
        return await factory()
    if not loop.is_running():
        raise _not_running(loop, what)
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(factory(), loop))


def call(interp: CodeInterpreter, factory: Factory[T], *, what: str, hint: str) -> T:
    """Run ``factory()`` on ``interp``'s loop from synchronous code and wait for its result.

    Raises ConfigurationError (saying ``hint``) when called on that very loop's thread: waiting there
    would block the loop the result needs.
    """
    loop = home(interp, None)
    if loop is running_loop():
        raise ConfigurationError(
            f"{what} was called synchronously on the event loop the interpreter runs on, which would "
            f"block the loop it waits for; {hint}"
        )
    if not loop.is_running():
        raise _not_running(loop, what)
    return asyncio.run_coroutine_threadsafe(factory(), loop).result()


def close_private(interp: CodeInterpreter, timeout: float = 60) -> None:
    """Close ``interp`` if it runs on the integrations' private loop, and stop that loop (safe always)."""
    with _lock:
        own = _private.pop(interp, None)
        if own is not None and _claims.get(interp) is own.loop:
            del _claims[interp]
    if own is None or own.loop.is_closed():
        return
    if interp.loop is own.loop:
        asyncio.run_coroutine_threadsafe(interp.close(), own.loop).result(timeout)
    own.stop()
