"""An injectable clock: tests move time by assignment, never by sleeping (tenacity's style)."""

from __future__ import annotations

from datetime import UTC, datetime

#: The instant the file tests start from.
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """Returns ``now``; set ``now`` to move time."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
