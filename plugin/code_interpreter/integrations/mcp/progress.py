"""A cell's live output as MCP progress notifications: throttled, with heartbeats while it is silent.

MCP clients time out requests (often after 60 s) unless progress arrives, and a long cell is
otherwise a silent wait. When the request carries a progress token, the execution's live events
(``on_event``) are collected here and sent as ``notifications/progress``: the output printed since
the last one as the message (its tail when long), at most one per ``interval``; a cell that prints
nothing for ``heartbeat`` seconds still sends one saying it runs. ``progress`` is the elapsed time
in seconds (strictly increasing, as the protocol requires); there is no ``total``: a cell's length
is unknown. :meth:`ProgressRelay.on_event` only appends to a buffer, so a slow client never slows
the sandbox's output pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from ...executor import ExecutionEvent

__all__ = ["HEARTBEAT_S", "INTERVAL_S", "MAX_MESSAGE_CHARS", "ProgressRelay"]

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
"""Least time between two notifications; output arriving faster is merged into one."""
HEARTBEAT_S = 5.0
"""A silent cell sends a notification this often, so clients that reset their timeout on progress wait."""
MAX_MESSAGE_CHARS = 2000
"""Longest message; longer output since the last notification is cut to its tail (the result has it all)."""

Send = Callable[[float, str], Awaitable[None]]


class ProgressRelay:
    """Turns one execution's events into progress notifications; ``async with`` around the execution."""

    def __init__(
        self,
        send: Send,
        *,
        interval: float = INTERVAL_S,
        heartbeat: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Send through ``send(progress, message)``, at most once per ``interval`` seconds."""
        self._send_fn = send
        self.interval = interval
        self.heartbeat = heartbeat
        self._clock = clock
        self._started = clock()
        self._last_progress = 0.0
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.sent = 0
        """Notifications sent so far."""

    def on_event(self, event: ExecutionEvent) -> None:
        """The ``on_event`` callback: keep output chunks and stored files for the next notification."""
        if event.kind in ("stdout", "stderr") and event.text:
            self._pending.append(event.text)
        elif event.kind == "file" and event.filename:
            self._pending.append(f"[saved {event.filename}]\n")
        else:
            return
        self._wake.set()

    async def __aenter__(self) -> ProgressRelay:
        self._started = self._clock()
        self._task = asyncio.create_task(self._run(), name="mcp-progress")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True  # the loop ends at its next turn even if the cancel below were lost
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if exc_type is None and self._pending:
            await self._flush()  # the last output, before the result ends the request's progress token

    async def _run(self) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the event is set
        # (the last output and the end of the cell come together), and the relay would never stop.
        while not self._closed:
            try:
                async with asyncio.timeout(self.heartbeat):
                    await self._wake.wait()
            except TimeoutError:
                await self._send(f"running for {self._clock() - self._started:.0f} s; no new output")
                continue
            if self._closed:
                return
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(self.interval)

    async def _flush(self) -> None:
        text, self._pending = "".join(self._pending), []
        if len(text) > MAX_MESSAGE_CHARS:
            text = f"[… {len(text) - MAX_MESSAGE_CHARS:,} characters earlier]\n" + text[-MAX_MESSAGE_CHARS:]
        await self._send(text.rstrip("\n") or "(empty output)")

    async def _send(self, message: str) -> None:
        progress = max(round(self._clock() - self._started, 3), round(self._last_progress + 0.001, 3))
        self._last_progress = progress
        try:
            await self._send_fn(progress, message)
            self.sent += 1
        except Exception:  # a client that went away must not fail the execution
            log.debug("a progress notification could not be sent", exc_info=True)
