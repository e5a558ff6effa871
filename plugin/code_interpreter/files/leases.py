"""Who owns a session across hosts: the lease document, and the atomic updates that change it.

One document per (user_id, session_id) in ``session_snapshots`` holds BOTH the ownership lease and the
pointer to the session's saved snapshot, so a snapshot write is fenced by the lease inside one atomic
update, with no second document to race with:

- the lease: ``owner`` (a host id, or None), ``epoch`` (+1 at every take-over: the fencing token),
  ``lease_expires_at``; ``handoff_wanted_by`` / ``handoff_wanted_at`` (another host asks the owner to
  save and release); ``cells`` (the cell counter the owner reported last); ``prev_owner`` /
  ``prev_expired`` (written by a take-over: who held it before, and whether that lease had run out);
- the snapshot: ``blob_id`` (in the ``session_blobs`` GridFS bucket), ``size``, ``sha256``, ``saved_at``,
  ``saved_epoch``, ``saved_after_cell``, ``notes``;
- ``created_at``; ``expires_at``: the file store's expiry rule, counted from the last activity (a take,
  a renewal, a save, a release) plus ``file_expiration_hours``; never while a lease is live.

Time. Each update is an aggregation pipeline (documented since MongoDB 4.2) that reads the server's
clock, ``$$NOW``: whether a lease ran out is decided by one clock, the database's, never by comparing
the clocks of hosts. A host needs no synchronised clock; what it must respect is its *local* deadline
(:attr:`Lease.local_deadline`): the monotonic time it sent the request that took or renewed the lease,
plus the lease's length, which is never later than the server's expiry. On a replica set ``$$NOW`` is
the primary's clock: a failover to a member whose clock is ahead by d shortens the leases then live by
d, so members must agree within a small part of ``session_lease_s`` (NTP keeps them within
milliseconds; a lease is 10 s by default: renew it every third of that).

SecantusDB 0.7.0b3 binds ``$$NOW`` as a timezone-aware datetime while the dates it stores are naive,
and its comparisons between the two answer false both ways (``$subtract`` fails outright): used bare,
no lease would ever expire. ``{$toDate: {$toLong: "$$NOW"}}`` is the same instant on MongoDB and a
comparable date on SecantusDB, so every pipeline here reads the clock through :data:`SERVER_NOW`.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ..errors import FileStoreError

__all__ = [
    "SERVER_NOW",
    "TOMBSTONE_S",
    "Lease",
    "SavedSession",
    "acquire_update",
    "check_host",
    "check_session",
    "check_user",
    "create_update",
    "fence",
    "lease_from",
    "live_expr",
    "new_host_id",
    "release_update",
    "renew_update",
    "reset_update",
    "save_update",
    "saved_from",
    "stored_at",
    "visible_expr",
]

SERVER_NOW: dict[str, Any] = {"$toDate": {"$toLong": "$$NOW"}}
"""The server's clock as a date every server compares correctly (see the module docstring)."""

TOMBSTONE_S = 24 * 3600.0
"""How long a reset session's record (its epoch) is kept, so a late write of an old owner stays fenced."""

Expr = Any


@dataclass(frozen=True, slots=True)
class Lease:
    """A session's ownership as one operation left it, seen by the host that asked."""

    user_id: str
    """The session's user."""
    session_id: str
    """The session's id."""
    host: str
    """The host that asked."""
    held: bool
    """The asking host owns the session now."""
    owner: str | None
    """The host that owns it (None: nobody)."""
    epoch: int
    """The fencing token: +1 at every take-over; a renewal, release or save must name it."""
    expires_at: datetime | None
    """When the lease runs out, on the server's clock, unless renewed."""
    local_deadline: float
    """``time.monotonic()`` by which the asking host must have renewed or stopped its copy (0.0 when
    this lease was not just taken or renewed by it)."""
    cells: int
    """The cell counter the owner reported last."""
    saved_after_cell: int | None
    """The cell after which the saved snapshot was made (None: no snapshot, or not known)."""
    saved_at: datetime | None
    """When the saved snapshot was made (None: there is none)."""
    handoff_wanted_by: str | None
    """A host that asked the owner to save and release (None: nobody asks)."""
    handoff_wanted_at: datetime | None
    """When it first asked."""
    previous_owner: str | None
    """On a take-over: the host that held it before (None: it was free or new)."""
    previous_expired: bool
    """On a take-over: the previous owner's lease had run out (it did not hand the session over)."""
    unsaved: str | None = None
    """Why the last owner's state could not be saved when it gave the session up (None: it was, or no
    owner gave it up since the last save)."""

    @property
    def lost_cells(self) -> int:
        """Cells the previous owner reported past the saved snapshot, lost with it (at least this many:
        cells run after its last renewal are not counted); 0 unless the previous lease ran out."""
        if not self.previous_expired:
            return 0
        return max(0, self.cells - (self.saved_after_cell or 0))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (times as ISO strings)."""
        out = asdict(self)
        for key in ("expires_at", "saved_at", "handoff_wanted_at"):
            out[key] = _iso(out[key])
        return out


@dataclass(frozen=True, slots=True)
class SavedSession:
    """One of a user's sessions as the database knows it: live on a host, or saved."""

    user_id: str
    """The session's user."""
    session_id: str
    """The session's id."""
    state: Literal["live", "saved"]
    """``live``: a host holds an unexpired lease; ``saved``: a snapshot waits to be restored."""
    owner: str | None
    """The host it is live on (None when saved)."""
    cells: int
    """The last cell counter the session reported."""
    saved_after_cell: int | None
    """The cell after which its snapshot was made (None: no snapshot, or not known)."""
    size: int | None
    """Bytes of its snapshot (None: none yet)."""
    saved_at: datetime | None
    """When the snapshot was made."""
    expires_at: datetime | None
    """When the saved session expires unless used (None: never)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (times as ISO strings)."""
        out = asdict(self)
        for key in ("saved_at", "expires_at"):
            out[key] = _iso(out[key])
        return out


def new_host_id() -> str:
    """A host id unique to this process: ``hostname:pid:random`` (a restarted process is a new host)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# -- expressions -----------------------------------------------------------------------------------------


def _lit(value: Any) -> Expr:
    """A value as itself: a string starting with ``$`` must never be read as a field path."""
    return {"$literal": value}


def _field(name: str) -> Expr:
    """The field's value, null when missing (documents written before leases have no lease fields)."""
    return {"$ifNull": [f"${name}", None]}


def _plus(now: Expr, seconds: float | None) -> Expr:
    """``now`` + seconds, or null for "never"."""
    return None if seconds is None else {"$add": [now, int(seconds * 1000)]}


def _ran_out(now: Expr) -> Expr:
    # null (no lease) sorts before every date, so "no expiry recorded" counts as run out too.
    return {"$lte": [_field("lease_expires_at"), now]}


def live_expr(now: Expr) -> Expr:
    """True where a host holds a lease that has not run out at ``now``."""
    return {"$and": [{"$ne": [_field("owner"), None]}, {"$gt": [_field("lease_expires_at"), now]}]}


def visible_expr(now: Expr) -> Expr:
    """True where the record has not expired at ``now`` (for ``$expr``)."""
    return {"$or": [{"$eq": [_field("expires_at"), None]}, {"$gt": ["$expires_at", now]}]}


# -- updates ---------------------------------------------------------------------------------------------


def acquire_update(
    host: str, *, now: Expr, lease_s: float, keep_s: float | None, want_handoff: bool
) -> list[dict[str, Any]]:
    """Take the lease when it is free, ran out, or is already ``host``'s: owner = host, epoch + 1.

    Otherwise nothing changes, except that ``want_handoff`` records ``host``'s request to the owner
    (its first time is kept while the same host asks again).
    """
    owner = _field("owner")
    me = _lit(host)
    free = {"$or": [{"$eq": [owner, None]}, {"$eq": [owner, me]}, _ran_out(now)]}

    def pick(taken: Expr, kept: Expr) -> Expr:
        return {"$cond": [free, taken, kept]}

    asked_at = {"$cond": [{"$eq": [_field("handoff_wanted_by"), me]}, _field("handoff_wanted_at"), now]}
    fields: dict[str, Expr] = {
        "owner": pick(me, owner),
        "epoch": pick({"$add": [{"$ifNull": ["$epoch", 0]}, 1]}, {"$ifNull": ["$epoch", 0]}),
        "lease_expires_at": pick(_plus(now, lease_s), _field("lease_expires_at")),
        "prev_owner": pick(owner, _field("prev_owner")),
        "prev_expired": pick(
            {"$and": [{"$ne": [owner, None]}, _ran_out(now)]}, {"$ifNull": ["$prev_expired", False]}
        ),
        "handoff_wanted_by": pick(None, me if want_handoff else _field("handoff_wanted_by")),
        "handoff_wanted_at": pick(None, asked_at if want_handoff else _field("handoff_wanted_at")),
        "expires_at": pick(_plus(now, keep_s), "$expires_at"),
        "cells": {"$ifNull": ["$cells", 0]},
    }
    return [{"$set": fields}]


def renew_update(
    *, now: Expr, lease_s: float, keep_s: float | None, cells: int | None
) -> list[dict[str, Any]]:
    """Extend the lease from ``now`` (the filter names owner and epoch), recording the cell counter."""
    fields: dict[str, Expr] = {"lease_expires_at": _plus(now, lease_s), "expires_at": _plus(now, keep_s)}
    if cells is not None:
        fields["cells"] = _lit(cells)
    return [{"$set": fields}]


def release_update(
    *, now: Expr, keep_s: float | None, cells: int | None, unsaved: str | None = None
) -> list[dict[str, Any]]:
    """Give the lease up (the filter names owner and epoch); the epoch stays, so the next take is +1.

    ``unsaved``: why the owner's last state could not be saved, for the next host to say."""
    fields: dict[str, Expr] = {
        "unsaved": _lit(unsaved),
        "owner": None,
        "lease_expires_at": None,
        "handoff_wanted_by": None,
        "handoff_wanted_at": None,
        "expires_at": _plus(now, keep_s),
    }
    if cells is not None:
        fields["cells"] = _lit(cells)
    return [{"$set": fields}]


def save_update(
    *,
    now: Expr,
    lease_s: float,
    keep_s: float | None,
    blob_id: str,
    size: int,
    sha256: str,
    epoch: int,
    cell: int | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    """Point the record at a new snapshot (the filter names owner and epoch: the fence), and renew.

    ``replaced_blob_id`` keeps the blob it replaced, for the saver to delete.
    """
    fields: dict[str, Expr] = {
        "replaced_blob_id": _field("blob_id"),
        "blob_id": _lit(blob_id),
        "size": _lit(size),
        "sha256": _lit(sha256),
        "saved_at": now,
        "saved_epoch": _lit(epoch),
        "saved_after_cell": _lit(cell),
        "notes": _lit(notes),
        "unsaved": None,
        "lease_expires_at": _plus(now, lease_s),
        "expires_at": _plus(now, keep_s),
    }
    if cell is not None:
        fields["cells"] = _lit(cell)
    return [{"$set": fields}]


_RESET_FIELDS = (
    *("owner", "lease_expires_at", "handoff_wanted_by", "handoff_wanted_at", "prev_owner"),
    *("replaced_blob_id", "blob_id", "size", "sha256", "saved_at", "saved_epoch", "saved_after_cell"),
)


def create_update(*, now: Expr) -> list[dict[str, Any]]:
    """A new record, free at epoch 0 and kept for :data:`TOMBSTONE_S` unless taken; a no-op on one
    that exists (the upsert that creates it may meet another host's)."""
    fields = {
        "created_at": {"$ifNull": ["$created_at", now]},
        "epoch": {"$ifNull": ["$epoch", 0]},
        "cells": {"$ifNull": ["$cells", 0]},
        "expires_at": {"$ifNull": ["$expires_at", _plus(now, TOMBSTONE_S)]},
    }
    return [{"$set": fields}]


def reset_update(*, now: Expr) -> list[dict[str, Any]]:
    """Forget the session, live and saved, but keep its epoch for :data:`TOMBSTONE_S`: an old owner's
    late renewal or save still matches nothing, and the next take continues the epochs."""
    fields: dict[str, Expr] = dict.fromkeys(_RESET_FIELDS)
    fields.update(prev_expired=False, cells=0, notes=_lit([]), expires_at=_plus(now, TOMBSTONE_S))
    return [{"$set": fields}]


# -- reading records ---------------------------------------------------------------------------------------


def lease_from(doc: dict[str, Any], host: str, deadline: float) -> Lease:
    """The lease a record shows to ``host``; ``deadline`` is its local deadline if it holds it."""
    owner = doc.get("owner")
    held = owner == host
    saved = bool(doc.get("blob_id"))
    return Lease(
        user_id=str(doc["user_id"]),
        session_id=str(doc["session_id"]),
        host=host,
        held=held,
        owner=owner,
        epoch=int(doc.get("epoch") or 0),
        expires_at=doc.get("lease_expires_at"),
        local_deadline=deadline if held else 0.0,
        cells=int(doc.get("cells") or 0),
        saved_after_cell=doc.get("saved_after_cell") if saved else None,
        saved_at=doc.get("saved_at") if saved else None,
        handoff_wanted_by=doc.get("handoff_wanted_by"),
        handoff_wanted_at=doc.get("handoff_wanted_at"),
        previous_owner=doc.get("prev_owner"),
        previous_expired=bool(doc.get("prev_expired")),
        unsaved=doc.get("unsaved"),
    )


def saved_from(row: dict[str, Any]) -> SavedSession:
    """A listing row (a record with a computed ``live`` flag) as a :class:`SavedSession`."""
    live, saved = bool(row["live"]), bool(row.get("blob_id"))
    return SavedSession(
        user_id=str(row["user_id"]),
        session_id=str(row["session_id"]),
        state="live" if live else "saved",
        owner=row.get("owner") if live else None,
        cells=int(row.get("cells") or 0),
        saved_after_cell=row.get("saved_after_cell") if saved else None,
        size=int(row["size"]) if saved else None,
        saved_at=row.get("saved_at") if saved else None,
        expires_at=row.get("expires_at"),
    )


def fence(lease: Lease) -> dict[str, Any]:
    """The fence: the record still names this host at this epoch."""
    return {
        "user_id": lease.user_id,
        "session_id": lease.session_id,
        "owner": lease.host,
        "epoch": lease.epoch,
    }


def stored_at(row: dict[str, Any]) -> datetime:
    """When a record's snapshot was saved (the quota's age of it)."""
    at = row.get("saved_at") or row.get("created_at")
    return at if isinstance(at, datetime) else datetime(1970, 1, 1, tzinfo=UTC)


def check_user(user_id: int | str) -> str:
    """A user id as records hold it (a string; ``1`` and ``"1"`` are one user)."""
    if isinstance(user_id, bool) or not isinstance(user_id, int | str):
        raise TypeError(f"user_id must be an int or a str, not {type(user_id).__name__}")
    if not str(user_id):
        raise FileStoreError("user_id must not be empty")
    return str(user_id)


def check_session(session_id: str) -> str:
    """A session id, refused when empty."""
    if not isinstance(session_id, str) or not session_id:
        raise FileStoreError("session_id must be a non-empty string")
    return session_id


def check_host(host: str) -> str:
    """A host id, refused when empty."""
    if not isinstance(host, str) or not host:
        raise FileStoreError(
            "host must be a non-empty string: make one with leases.new_host_id() per process"
        )
    return host


def _iso(value: Any) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None
