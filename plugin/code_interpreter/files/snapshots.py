"""Saved sessions for today's run path, on top of the :class:`~.session_store.SessionStore`.

The session manager saves a session when it ends on this host (idle expiry, eviction, close, shutdown)
and restores it on the next call, here or on any host sharing the database. It does not hold leases
while a session is live yet; until it does, each save takes the session's lease just for the write,
saves fenced by it, and releases it. A save therefore never lands over a host that holds the session
(it is refused, naming that host), and restores read what the last save left.
"""

from __future__ import annotations

from typing import Any

from ..errors import SnapshotRefused
from .leases import new_host_id
from .session_store import SNAPSHOT_BUCKET, SNAPSHOT_COLLECTION, SessionStore

__all__ = ["SNAPSHOT_BUCKET", "SNAPSHOT_COLLECTION", "SnapshotRefused", "SnapshotStore"]


class SnapshotStore:
    """Save, load, delete and expire session snapshots (the session manager's store; async)."""

    def __init__(self, store: SessionStore, host: str | None = None) -> None:
        """Snapshots in ``store``, written as ``host`` (default: a new id for this process)."""
        self.store = store
        self.host = host or new_host_id()
        """The host id this process's saves take the lease as."""

    @property
    def meta(self) -> Any:
        """The records' collection (``session_snapshots``)."""
        return self.store.meta

    async def ensure_indexes(self) -> None:
        """The session store's indexes."""
        await self.store.ensure_indexes()

    async def save(self, user_id: str, session_id: str, data: bytes, notes: list[str]) -> dict[str, Any]:
        """Store ``data`` as the session's snapshot (replacing the previous one); returns the lease's view.

        Raises:
            SnapshotRefused: another host holds the session, or the snapshot is over its cap.
            QuotaExceeded: the snapshot does not fit the user's storage quota.
        """
        lease = await self.store.acquire(user_id, session_id, self.host)
        if not lease.held:
            until = lease.expires_at.isoformat() if lease.expires_at else "it releases it"
            raise SnapshotRefused(
                f"session {session_id!r} is live on host {lease.owner} (until {until}): this copy was not "
                "saved over it"
            )
        try:
            saved = await self.store.save_snapshot(lease, data, notes)
        finally:
            await self.store.release(lease)  # a save keeps the epoch: this lease still names it
        return saved.to_dict()

    async def find(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        """The session's unexpired record, or None."""
        return await self.store.find(user_id, session_id)

    async def load(self, user_id: str, session_id: str) -> bytes | None:
        """The session's snapshot bytes; None when there is none. SnapshotRefused when it may not be used."""
        return await self.store.load(user_id, session_id)

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Forget the session's snapshot (and any lease on it); True if there was one."""
        return await self.store.delete(user_id, session_id)

    async def cleanup_expired(self) -> int:
        """Delete expired saved sessions; returns how many."""
        return await self.store.cleanup_expired()
