"""Room for sessions on one host: :class:`HostSession` (one session here), and who makes room for another."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .process import SandboxProcess
from .results import SessionState

__all__ = ["HostSession", "private_mb", "victims_for"]


@dataclass(eq=False)
class HostSession:
    """One session on this host: its process (while live), its queue of cells, its counters."""

    user_id: str
    session_id: str
    process: SandboxProcess | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cells: int = 0
    state: SessionState = "new"
    last_used: float = 0.0
    busy: bool = False
    dirty: bool = False
    """Cells ran since the last save (a checkpoint is due)."""
    snapshot_bytes: int = 0
    """The size of its last snapshot (checkpoints skip sessions over their budget)."""
    checkpointer: asyncio.Task[None] | None = None
    unsaved: str | None = None
    """Why its last save failed (None: the last one succeeded); said by its next take after it ends."""

    @property
    def key(self) -> tuple[str, str]:
        """(user id, session id)."""
        return (self.user_id, self.session_id)

    @property
    def alive(self) -> bool:
        """Its process is there."""
        return self.process is not None and self.process.alive


def victims_for(
    user_id: str, live: Sequence[HostSession], ending: Sequence[HostSession], settings: Any
) -> tuple[list[HostSession], str | None]:
    """Idle sessions to evict so one more of ``user_id`` fits under ``max_sessions_per_user`` and
    ``max_sessions``, or why not (busy ones fill the caps). Sessions still ending count until gone."""
    ending_users = [x.user_id for x in ending]
    victims: list[HostSession] = []
    for pool, ending_count, cap, whose in (
        ([x for x in live if x.user_id == user_id], ending_users.count(user_id),
         settings.max_sessions_per_user, "you have"),
        (list(live), len(ending_users), settings.max_sessions, "this host has"),
    ):  # fmt: skip
        excess = len(pool) + ending_count + 1 - cap - sum(v in pool for v in victims)
        if excess <= 0:
            continue
        idle = sorted(
            (x for x in pool if not x.busy and x not in victims and x.alive), key=lambda x: x.last_used
        )
        if len(idle) < excess:
            names = ", ".join(sorted(x.session_id for x in pool if x.user_id == user_id)[:5])
            return [], (
                f"{whose} {len(pool) + ending_count} live sessions, the limit is {cap}, and not enough are "
                f"idle: close one first ({names or 'sessions of other users'}), or call again when one is "
                "idle"
            )
        victims += idle[:excess]
    return victims, None


def private_mb(*pids: int | None) -> float | None:
    """Private (unshared) memory of processes in MB, from smaps_rollup (None when one cannot be read)."""
    kb = 0
    for pid in pids:
        if not pid:
            return None
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                kb += sum(
                    int(line.split()[1]) for line in fh if line.startswith(("Private_Clean", "Private_Dirty"))
                )
        except (OSError, ValueError, IndexError):
            return None
    return round(kb / 1024, 1)
