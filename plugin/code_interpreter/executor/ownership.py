"""Who owns a session across hosts: a lease in the database, taken before a session starts here, renewed
while it is live, given up when it ends — and handed over when another host asks.

One host at a time runs a session (:class:`~code_interpreter.files.session_store.SessionStore` holds the
lease and the snapshot in one record, so every save is fenced by the lease's epoch). A cell that reaches a
host that does not own its session asks the owner, through the database, to finish its running cell,
save and release (:meth:`Ownership.take`); the owner sees the request within :data:`HANDOFF_POLL_S`
(:meth:`Ownership._keep`) and ends its copy through the session manager's ordinary end path. A host whose
lease was taken (it stalled past the lease, or the session was reset elsewhere) learns it at its next
renewal and stops its copy without saving. No cell pays a database round trip while its host's lease is
comfortably live: renewals run in the background every third of ``session_lease_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import LeaseLost, SessionBusy, StorageUnavailable
from ..files.leases import Lease, new_host_id
from ..files.session_store import SessionStore

__all__ = ["HANDOFF_POLL_S", "Ownership", "Taken"]

log = logging.getLogger("code_interpreter.sessions")

#: How often a host with live sessions looks for hand-off requests (one query for all of them).
HANDOFF_POLL_S = 0.1
#: How often a host waiting for a session checks whether it was handed over.
TAKE_POLL_S = 0.05

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Taken:
    """A session this host now owns, and how it came to."""

    lease: Lease
    """The lease (``held``)."""
    came_from: str | None
    """The host that held it before (it handed the session over, or stopped answering); None if none."""
    waited_s: float
    """Seconds spent taking it (a hand-off: the other host's cell, its save and release)."""
    note: str | None
    """What the cell's result should say: handed off from another host, or taken after that host
    stopped answering (and what was lost); None for a session nobody else held."""

    @property
    def handoff(self) -> dict[str, Any] | None:
        """``{"from": host, "ms": …, "expired": bool}`` when another host held it before; else None."""
        if self.came_from is None:
            return None
        return {"from": self.came_from, "ms": round(self.waited_s * 1000, 1),
                "expired": self.lease.previous_expired}  # fmt: skip


class Ownership:
    """The leases of one host's live sessions, kept in the background (no store: one host, no leases)."""

    def __init__(
        self,
        store: SessionStore | None,
        *,
        host: str | None = None,
        on_handoff: Callable[[Key], Awaitable[None]] | None = None,
        on_lost: Callable[[Key, LeaseLost], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.host = host or new_host_id()
        """This host's id in the leases (unique per process)."""
        self.leases: dict[Key, Lease] = {}
        self.cells: dict[Key, int] = {}
        """The cell counter of each session held here, reported with the renewals."""
        self.on_handoff = on_handoff
        self.on_lost = on_lost
        self._keeper: asyncio.Task[None] | None = None
        self._handing: set[Key] = set()

    @property
    def shared(self) -> bool:
        """Whether sessions are shared with other hosts (a database store)."""
        return self.store is not None

    # -- taking and giving up ---------------------------------------------------------------------------
    async def take(self, user_id: str, session_id: str, wait_s: float) -> Taken:
        """Own the session: take its lease, asking the host that holds it to hand it over (or waiting its
        lease out when that host stopped answering). SessionBusy after ``wait_s`` seconds."""
        started = time.monotonic()
        if self.store is None:
            return Taken(_local_lease(user_id, session_id, self.host), None, 0.0, None)
        lease = await self.store.acquire(user_id, session_id, self.host)
        # The host asked to hand over releases before this host takes: the take then finds it free.
        asked = lease.owner if not lease.held and lease.owner != self.host else None
        while not lease.held:
            if time.monotonic() - started > wait_s:
                raise SessionBusy(
                    f"session {session_id!r} is live on host {lease.owner}, which did not hand it over "
                    f"within {wait_s:.0f} s (it is running a long cell, or stopped answering and its lease "
                    "has not run out yet): call again in a moment"
                )
            await asyncio.sleep(TAKE_POLL_S)
            lease = await self.store.request_handoff(user_id, session_id, self.host)
        self.leases[(user_id, session_id)] = lease
        self._ensure_keeper()
        waited = time.monotonic() - started
        came_from = lease.previous_owner if lease.previous_owner not in (None, self.host) else asked
        return Taken(lease, came_from, waited, _taken_note(lease, came_from, waited))

    async def confirm(self, key: Key, cells: int) -> None:
        """Make sure this host still owns ``key`` before (or after) a cell; LeaseLost when it does not.

        Free while the lease is comfortably live (the background renewals keep it so); a database round
        trip only when the local deadline is near or past (the host was stalled).
        """
        if self.store is None:
            return
        self.cells[key] = cells
        lease = self.leases.get(key)
        if lease is None:
            raise LeaseLost(f"this host no longer owns session {key[1]!r}")
        if time.monotonic() < lease.local_deadline - self.store.lease_s / 3:
            return
        await self._through(key, lease, self.store.renew(lease, cells))

    async def save(self, key: Key, data: bytes, notes: list[str], cells: int) -> None:
        """Store a snapshot made after cell ``cells``, fenced by this host's lease (LeaseLost if taken)."""
        if self.store is None:
            return
        lease = self.leases.get(key)
        if lease is None:
            raise LeaseLost(f"this host no longer owns session {key[1]!r}: its snapshot was not saved")
        await self._through(key, lease, self.store.save_snapshot(lease, data, notes, cell=cells))

    async def release(self, key: Key, cells: int, unsaved: str | None = None) -> None:
        """Give the session up (after its last save) so any host may take it; ``unsaved`` says why its
        last state could not be saved, for whichever host takes it next."""
        lease = self.leases.pop(key, None)
        self._handing.discard(key)
        self.cells.pop(key, None)
        if self.store is not None and lease is not None:
            with contextlib.suppress(StorageUnavailable):  # the lease then runs out on its own
                await self.store.release(lease, cells, unsaved)

    # -- one held lease, changed by the store ------------------------------------------------------------
    # Each store call is made with the lease held when it started; by the time it answers, the session may
    # have been released here and taken anew (a new lease under the same key), which the answer must not
    # touch. So a lost lease is dropped, and a renewed one kept, only while it is still the one held.
    async def _through(self, key: Key, lease: Lease, op: Awaitable[Lease]) -> Lease:
        """Await a store call made with the held ``lease``: keep the lease it returns; on LeaseLost drop
        the lease and re-raise."""
        try:
            renewed = await op
        except LeaseLost:
            self._drop(key, lease)
            raise
        self._replace(key, lease, renewed)
        return renewed

    def _drop(self, key: Key, lease: Lease) -> bool:
        """Forget ``lease`` if it is still the one held for ``key``; whether it was."""
        if self.leases.get(key) is lease:
            del self.leases[key]
            return True
        return False

    def _replace(self, key: Key, lease: Lease, renewed: Lease) -> None:
        if self.leases.get(key) is lease:
            self.leases[key] = renewed

    def forget(self, key: Key) -> None:
        """Drop a lease this host lost (never released: it is not ours any more)."""
        self.leases.pop(key, None)
        self._handing.discard(key)
        self.cells.pop(key, None)

    # -- keeping --------------------------------------------------------------------------------------
    def _ensure_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(), name="code-interpreter-session-leases")

    async def _keep(self) -> None:
        """While leases are held: renew each every third of its length; hand over what others ask for."""
        assert self.store is not None
        next_renewal = time.monotonic() + self.store.lease_s / 3
        while self.leases:
            await asyncio.sleep(HANDOFF_POLL_S)
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + self.store.lease_s / 3
                    await self._renew_all()
                await self._watch()
            except StorageUnavailable as exc:  # the database is away: the local deadlines still hold
                log.warning("session leases could not be kept up: %s", exc)
            except Exception:
                log.exception("keeping session leases failed")

    async def _watch(self) -> None:
        """One query for all leases held here: hand over what another host asks for; stop what this host
        lost (taken over, or reset from anywhere) without waiting for its next renewal."""
        assert self.store is not None
        before = dict(self.leases)
        owned = {(lease.user_id, lease.session_id): lease for lease in await self.store.owned_by(self.host)}
        for key, mine in before.items():
            if self.leases.get(key) is not mine:
                continue  # taken, renewed or released while the query ran: judged next time
            seen = owned.get(key)
            if seen is None or seen.epoch != mine.epoch:
                if self.leases.pop(key, None) is not None and self.on_lost is not None:
                    await self.on_lost(key, LeaseLost(f"this host no longer owns session {key[1]!r}"))
            elif seen.handoff_wanted_by:
                await self._hand_over(key)

    async def _renew_all(self) -> None:
        assert self.store is not None
        for key, lease in list(self.leases.items()):
            try:
                renewed = await self.store.renew(lease, self.cells.get(key))
            except LeaseLost as exc:
                if self._drop(key, lease) and self.on_lost is not None:
                    await self.on_lost(key, exc)
                continue
            self._replace(key, lease, renewed)
            if renewed.handoff_wanted_by:
                await self._hand_over(key)

    async def _hand_over(self, key: Key) -> None:
        if key in self.leases and key not in self._handing and self.on_handoff is not None:
            self._handing.add(key)
            await self.on_handoff(key)

    async def close(self) -> None:
        """Stop keeping (after the sessions were ended and released)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None


def _local_lease(user_id: str, session_id: str, host: str) -> Lease:
    return Lease(user_id, session_id, host, True, host, 0, None, float("inf"), 0, None, None, None, None,
                 None, False)  # fmt: skip


def _taken_note(lease: Lease, came_from: str | None, waited: float) -> str | None:
    if lease.unsaved is not None and not lease.previous_expired:
        kept = (
            f"restored the snapshot saved after cell {lease.saved_after_cell}; cells after it are lost"
            if lease.saved_at else "its variables are gone, this is a fresh session"
        )  # fmt: skip
        return f"the session could not be saved when it last ended ({lease.unsaved}): {kept}"
    if came_from is None:
        return None
    if not lease.previous_expired:
        return (
            f"the session was handed over from host {came_from} (it saved and released it; "
            f"{waited * 1000:.0f} ms)"
        )
    saved = (
        f"the snapshot saved after cell {lease.saved_after_cell}" if lease.saved_after_cell
        else "its last snapshot" if lease.saved_at else "nothing (no snapshot had been saved)"
    )  # fmt: skip
    lost = (
        f"; cells after it are lost (at least {lease.lost_cells})"
        if lease.lost_cells
        else "; later cells are lost"
    )
    return (
        f"host {came_from}, which ran this session, stopped answering and its lease ran out: this "
        f"host restored {saved}{lost if lease.saved_at or lease.lost_cells else ''}"
    )
