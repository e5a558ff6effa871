"""What the file store holds, read straight from the database: metadata and the bytes in *every* bucket.

Counting only the legacy ``file_blobs`` bucket would make "nothing left behind" assertions pass
trivially now that files that expire keep their bytes in one bucket per hour of expiry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pymongo import monitoring
from pymongo.asynchronous.database import AsyncDatabase

from code_interpreter.files import COLLECTION

BUCKET_RE = re.compile(r"file_blobs(_\d{10})?")


async def bucket_names(db: AsyncDatabase[Any]) -> list[str]:
    """Buckets of file bytes present in ``db`` (either of their two collections), sorted."""
    names = set()
    for coll in await db.list_collection_names():
        base, _, kind = coll.rpartition(".")
        if kind in ("files", "chunks") and BUCKET_RE.fullmatch(base):
            names.add(base)
    return sorted(names)


async def counts(db: AsyncDatabase[Any]) -> tuple[int, int, int]:
    """(metadata documents, GridFS files documents, GridFS chunks), bytes summed over every bucket."""
    files = chunks = 0
    for bucket in await bucket_names(db):
        files += await db[f"{bucket}.files"].count_documents({})
        chunks += await db[f"{bucket}.chunks"].count_documents({})
    return await db[COLLECTION].count_documents({}), files, chunks


async def bucket_holding(db: AsyncDatabase[Any], file_id: str) -> str:
    """The bucket the metadata of ``file_id`` names (``gridfs://<bucket>/<file_id>``)."""
    doc = await db[COLLECTION].find_one({"file_id": file_id})
    assert doc is not None, f"no metadata for {file_id}"
    bucket, rest = str(doc["file_path"]).removeprefix("gridfs://").split("/", 1)
    assert rest == file_id, doc["file_path"]
    return bucket


class Commands(monitoring.CommandListener):
    """Records every command a client starts (name, body); ``on_event(stage, name, body or reply)`` may
    act on a command as it starts or succeeds (cancel the caller, kill -9 the server)."""

    def __init__(self, on_event: Callable[[str, str, dict[str, Any]], None] | None = None) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.on_event = on_event

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append((event.command_name, dict(event.command)))
        if self.on_event is not None:
            self.on_event("started", event.command_name, dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.on_event is not None:
            self.on_event("succeeded", event.command_name, dict(event.reply))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
