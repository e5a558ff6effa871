"""The conversations of ``code-interpreter chat``, kept so ``--session-id`` can resume one.

The code session (variables, files in the working directory) is saved by the interpreter itself when
the chat ends; what the model said and was told is kept here, in the ``cli_chats`` collection of the
same database, with the files the conversation may read. A conversation expires with the user's
files (``file_expiration_hours``; a TTL index removes it) and is restored on any machine that shares
the database, as its code session is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ..settings import Settings

__all__ = ["COLLECTION", "Conversation", "ConversationStore"]

COLLECTION = "cli_chats"
IMAGE_PART_TYPES = ("image_url", "input_image")


@dataclass(slots=True)
class Conversation:
    """One chat: its messages and the files it may read."""

    session_id: str
    """The conversation's id, also its code session's."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The messages so far (images left out: the model saw them once, they cost tokens every time)."""
    file_ids: list[str] = field(default_factory=list)
    """The files uploaded into this conversation: the only ones its code may read."""
    resumed: bool = False
    """True when it was loaded from the store."""
    file_names: list[str] = field(default_factory=list)
    """The names of its files that are still stored (for the banner; not saved)."""


class ConversationStore:
    """Load and save conversations by (user, session id)."""

    def __init__(self, db: AsyncDatabase[Any], settings: Settings) -> None:
        """Over ``db`` (the interpreter's database); expiry follows ``settings.file_expiration_hours``."""
        self.coll = db.get_collection(COLLECTION)
        self.settings = settings

    async def ensure_indexes(self) -> None:
        """A unique (user, session id) index, and a TTL index on the expiry."""
        await self.coll.create_index([("user_id", 1), ("session_id", 1)], unique=True)
        await self.coll.create_index("expires_at", expireAfterSeconds=0)

    async def load(self, user_id: str, session_id: str) -> Conversation | None:
        """The unexpired conversation, or None."""
        now = datetime.now(UTC)
        query = {"user_id": user_id, "session_id": session_id}
        doc = await self.coll.find_one({**query, "$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]})
        if doc is None:
            return None
        return Conversation(
            session_id, list(doc.get("messages") or []), list(doc.get("file_ids") or []), True
        )

    async def save(self, user_id: str, conversation: Conversation, model: str) -> None:
        """Store the conversation (its expiry renewed)."""
        ttl = self.settings.file_ttl_seconds
        now = datetime.now(UTC)
        doc = {
            "messages": [_without_images(m) for m in conversation.messages],
            "file_ids": conversation.file_ids,
            "model": model,
            "updated_at": now,
            "expires_at": None if ttl is None else now + timedelta(seconds=ttl),
        }
        query = {"user_id": user_id, "session_id": conversation.session_id}
        await self.coll.update_one(query, {"$set": doc}, upsert=True)


def _without_images(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    kept = [p for p in content if not (isinstance(p, dict) and p.get("type") in IMAGE_PART_TYPES)]
    if len(kept) < len(content):
        kept.append(
            {"type": "text", "text": f"({len(content) - len(kept)} image(s) left out of the saved chat)"}
        )
    return {**message, "content": kept}
