"""The per-user storage quota over everything a user stores: uploaded and generated files AND saved sessions.

``max_bytes_per_user`` bounds the bytes of a user's unexpired files plus their saved sessions' snapshots;
``max_files_per_user`` bounds the files alone. Both the file store (an upload) and the session store (a
snapshot) ask :func:`plan_room` what to do; each store lists its own items (:class:`StoredItem`) and
deletes its own victims, so neither module imports the other. Victims are taken oldest first; a live
session's snapshot is never one (it is the live copy's checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ..errors import QuotaExceeded
from ..settings import Settings
from .records import mb

__all__ = [
    "ItemSource",
    "RoomPlan",
    "StoredItem",
    "Usage",
    "mb",
    "plan_room",
    "room_for_snapshot",
    "usage_of",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One thing a user stores, as the quota sees it."""

    kind: Literal["file", "session"]
    """A stored file, or a saved session's snapshot."""
    key: str
    """The file id, or the session id."""
    size: int
    """Bytes it holds."""
    at: datetime
    """When it was stored (uploaded, or last saved): the oldest goes first."""
    evictable: bool = True
    """False for the snapshot of a session live on some host."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What a user stores: counts and bytes of files and of saved sessions."""

    files: int
    """Unexpired files."""
    file_bytes: int
    """Their bytes."""
    sessions: int
    """Saved sessions (with a snapshot)."""
    session_bytes: int
    """Their snapshots' bytes."""

    @property
    def bytes(self) -> int:
        """Everything the quota counts."""
        return self.file_bytes + self.session_bytes

    def describe(self) -> str:
        """``3 files, 1MB`` or ``3 files, 1MB, and 2 saved sessions, 40MB``, for messages."""
        text = f"{self.files} files, {mb(self.file_bytes)}"
        if self.sessions:
            text += f", and {self.sessions} saved sessions, {mb(self.session_bytes)}"
        return text


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """What it takes to store something more for a user."""

    usage: Usage
    """What the user stores now (the item being replaced left out)."""
    fits: bool
    """It fits as things are."""
    victims: tuple[StoredItem, ...]
    """Under the evict policy: what to delete first, oldest first (empty when it fits)."""
    can_fit: bool
    """It fits once the victims are gone (False: even evicting everything evictable is not enough)."""


class ItemSource(Protocol):
    """A store whose items count against the quota (the file store, for the session store)."""

    async def quota_items(self, user_id: str) -> list[StoredItem]:
        """The user's unexpired items."""
        ...

    async def evict_items(self, user_id: str, keys: list[str]) -> None:
        """Delete these items of the user (they are going to make room)."""
        ...


def usage_of(items: Sequence[StoredItem]) -> Usage:
    """Counts and bytes of ``items``."""
    files = [i for i in items if i.kind == "file"]
    sessions = [i for i in items if i.kind == "session"]
    return Usage(len(files), sum(i.size for i in files), len(sessions), sum(i.size for i in sessions))


def plan_room(
    items: Sequence[StoredItem], *, incoming_bytes: int, incoming_files: int, max_files: int, max_bytes: int
) -> RoomPlan:
    """Whether ``incoming_bytes`` (in ``incoming_files`` new files: 0 for a snapshot) fit beside ``items``.

    When they do not, the victims are the oldest evictable items whose removal makes them fit.
    """
    usage = usage_of(items)
    count, used = usage.files, usage.bytes

    def fits(count: int, used: int) -> bool:
        files_ok = incoming_files == 0 or count + incoming_files <= max_files  # a snapshot is not a file
        return files_ok and used + incoming_bytes <= max_bytes

    if fits(count, used):
        return RoomPlan(usage, True, (), True)
    victims: list[StoredItem] = []
    for item in sorted((i for i in items if i.evictable), key=lambda i: (i.at, i.key)):
        if fits(count, used):
            break
        victims.append(item)
        count -= item.kind == "file"
        used -= item.size
    return RoomPlan(usage, False, tuple(victims), fits(count, used))


async def room_for_snapshot(
    user_id: str,
    session_id: str,
    size: int,
    settings: Settings,
    sessions: ItemSource,
    files: ItemSource | None,
) -> None:
    """Make room for a new snapshot of ``size`` bytes of a session, or raise :class:`QuotaExceeded`.

    First the cap on saved sessions: over ``max_saved_sessions_per_user`` the user's oldest saved ones
    expire, whatever the policy (live ones are left: the cap may be passed by sessions live on hosts,
    which ``max_sessions_per_user`` bounds). Then the bytes, with the user's files: under
    ``quota_policy="evict"`` the oldest files and saved sessions go first; under ``"refuse"`` it is refused.
    The session's own previous snapshot is not counted: the new one replaces it.
    """
    s = settings
    mine = [i for i in await sessions.quota_items(user_id) if i.key != session_id]
    over = len(mine) + 1 - s.max_saved_sessions_per_user
    if over > 0:
        expire = sorted((i for i in mine if i.evictable), key=lambda i: (i.at, i.key))[:over]
        await sessions.evict_items(user_id, [i.key for i in expire])
        log.info(
            "user %s: %d oldest saved session(s) expired (max_saved_sessions_per_user)", user_id, len(expire)
        )
        mine = [i for i in mine if i not in expire]
    items = mine + (await files.quota_items(user_id) if files is not None else [])
    plan = plan_room(
        items,
        incoming_bytes=size,
        incoming_files=0,
        max_files=s.max_files_per_user,
        max_bytes=s.max_bytes_per_user,
    )
    if plan.fits:
        return
    if s.quota_policy == "refuse" or not plan.can_fit:
        raise QuotaExceeded(
            f"the session was not saved: its snapshot ({mb(size)}) does not fit the storage quota "
            f"({plan.usage.describe()} stored; the limit is {mb(s.max_bytes_per_user)}): delete files or "
            "saved sessions (sessions.reset), or keep less in the session"
        )
    victims = [v.key for v in plan.victims if v.kind == "file"]
    if victims and files is not None:
        await files.evict_items(user_id, victims)
    await sessions.evict_items(user_id, [v.key for v in plan.victims if v.kind == "session"])


async def room_for_upload(
    settings: Settings, uid: str, incoming: int, *, files: ItemSource, sessions: ItemSource
) -> str | None:
    """None if an upload of ``incoming`` bytes fits the user's quota (evicting their oldest files and saved
    sessions when ``quota_policy`` is ``evict``), else why not: files and saved sessions count together."""
    s = settings
    if incoming > s.max_bytes_per_user:
        return f"File exceeds your storage quota of {mb(s.max_bytes_per_user)}"
    items = await files.quota_items(uid) + await sessions.quota_items(uid)
    limits = {"max_files": s.max_files_per_user, "max_bytes": s.max_bytes_per_user}
    plan = plan_room(items, incoming_bytes=incoming, incoming_files=1, **limits)
    if plan.fits:
        return None
    if s.quota_policy == "refuse" or not plan.can_fit:
        what = "files or saved sessions" if plan.usage.sessions else "files"
        return (
            f"Storage quota reached ({plan.usage.describe()}; the limit is {s.max_files_per_user} "
            f"files and {mb(s.max_bytes_per_user)}): delete some {what} first or wait for them to expire"
        )
    evicted_files = [v.key for v in plan.victims if v.kind == "file"]
    evicted_sessions = [v.key for v in plan.victims if v.kind == "session"]
    await files.evict_items(uid, evicted_files)
    await sessions.evict_items(uid, evicted_sessions)
    log.info("quota: evicted %d file(s), %d saved session(s) of user %s", len(evicted_files),
             len(evicted_sessions), uid)  # fmt: skip
    return None
