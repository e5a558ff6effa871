"""MongoDB connection: an external ``MONGODB_URI``, an embedded SecantusDB, or the caller's database.

Every client this package opens uses pymongo's async API with ``tz_aware=True`` (BSON datetimes
come back as aware UTC) and a short server-selection timeout, so one attempt fails fast and
:func:`~code_interpreter.storage.retry.with_retries` decides how long to keep trying.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError as PyMongoConfigurationError

from ..errors import ConfigurationError, StorageUnavailable
from ..settings import Settings
from .embedded import EmbeddedServer, ServerRecord
from .retry import RetryContext, RetryPolicy, register_context, server_name, with_retries
from .uris import hosts_of, invalid_uri, unresolvable_srv

__all__ = ["EmbeddedServer", "RetryPolicy", "ServerRecord", "Storage", "StorageUnavailable", "with_retries"]


class Storage:
    """Owns the MongoDB connection: external MONGODB_URI, an embedded SecantusDB, or a caller's db_handler."""

    def __init__(
        self, settings: Settings, db_handler: Any = None, *, retry: RetryPolicy | None = None
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self._handler_db: AsyncDatabase[Any] | None = (
            unwrap_handler(db_handler) if db_handler is not None else None
        )
        self._client: AsyncMongoClient[Any] | None = None
        self._db: AsyncDatabase[Any] | None = None
        self._embedded: EmbeddedServer | None = None
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> str:
        """ "handler", "external" or "embedded"."""
        if self._handler_db is not None:
            return "handler"
        return "external" if self.settings.mongodb_uri else "embedded"

    @property
    def embedded(self) -> EmbeddedServer | None:
        """The embedded server launcher, in embedded mode after start()."""
        return self._embedded

    async def start(self) -> AsyncDatabase[Any]:
        """Connect (starting or reusing the embedded server if needed) and return the database; idempotent."""
        async with self._lock:
            if self._db is not None:
                return self._db
            if self._handler_db is not None:
                db = self._handler_db
                register_context(db.client, self._context(server_name(db.client), None))
            elif self.settings.mongodb_uri:
                client = self._open_client(self.settings.mongodb_uri)
                register_context(client, self._context(server_name(client), None))
                self._client, db = client, client[self.settings.database]
            else:
                root = self.settings.home / "db"
                self._embedded = EmbeddedServer(root, idle_s=self.settings.embedded_idle_s)
                rec = await self._embedded.ensure()
                client = self._open_client(f"mongodb://127.0.0.1:{rec.port}/?directConnection=true")
                register_context(client, self._context(f"127.0.0.1:{rec.port} (embedded)", self._recover))
                self._client, db = client, client[self.settings.database]
            self._db = db
        try:
            await self.ping()
        except BaseException:
            await self.close()
            raise
        return db

    @property
    def db(self) -> AsyncDatabase[Any]:
        """The database in use; raises StorageUnavailable before start()."""
        if self._db is None:
            raise StorageUnavailable("storage is not started: await Storage.start() (or use CodeInterpreter)")
        return self._db

    async def ping(self) -> None:
        """Check the server answers; StorageUnavailable naming it after bounded retries.

        Raises:
            StorageUnavailable: no answer; or a ``mongodb+srv://`` URI whose DNS records do not resolve.
            ConfigurationError: the URI's options (or the SRV record's) are not valid.
        """
        db = self.db
        ctx = self._context(self._server(), self._recover if self._embedded else None)
        try:
            await ctx.run(lambda: db.command("ping"), "ping")
        except PyMongoConfigurationError as exc:  # the first contact is where an SRV URI is resolved
            uri = self.settings.mongodb_uri if self._handler_db is None else None
            raise _configuration_problem(uri or "", exc) from exc

    async def close(self) -> None:
        """Close the client this object opened and leave the embedded server (it stops once unused)."""
        async with self._lock:
            client, self._client, self._db = self._client, None, None
            if client is not None:
                await client.close()
            if self._embedded is not None:
                await self._embedded.stop()
                self._embedded = None

    def describe(self) -> dict[str, Any]:
        """Where the data lives: {"mode", "address", "database"} (credentials never included)."""
        out: dict[str, Any] = {"mode": self.mode, "address": None, "database": None}
        if self._handler_db is not None:
            out["address"] = server_name(self._handler_db.client)
            out["database"] = self._handler_db.name
        elif self.settings.mongodb_uri:
            out["address"] = hosts_of(self.settings.mongodb_uri)
            out["database"] = self.settings.database
        else:
            rec = self._embedded.record if self._embedded else None
            out["address"] = f"127.0.0.1:{rec.port}" if rec else None
            out["database"] = self.settings.database
            out["data_dir"] = str(self.settings.home / "db" / "data")
            out["owner"] = bool(self._embedded and self._embedded.owned)
        return out

    async def __aenter__(self) -> Storage:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals -----------------------------------------------------------
    def _context(self, server: str, on_retry: Any) -> RetryContext:
        return RetryContext(self.retry, on_retry, server)

    def _server(self) -> str:
        if self._embedded is not None and self._embedded.record is not None:
            return f"127.0.0.1:{self._embedded.record.port} (embedded)"
        return str(self.describe()["address"] or "MongoDB")

    async def _recover(self, exc: BaseException) -> None:
        if self._embedded is not None:
            await self._embedded.recover()

    def _open_client(self, uri: str) -> AsyncMongoClient[Any]:
        given = {k.lower() for k, _ in parse_qsl(urlsplit(uri).query)}
        opts: dict[str, Any] = {"tz_aware": True}
        # One attempt must fail fast so with_retries bounds the total; keep what the URI says.
        if "serverselectiontimeoutms" not in given:
            opts["serverSelectionTimeoutMS"] = self.retry.server_selection_ms
        if "connecttimeoutms" not in given:
            opts["connectTimeoutMS"] = max(self.retry.server_selection_ms, 2000)
        if "sockettimeoutms" not in given:
            opts["socketTimeoutMS"] = 60_000  # a hung server errors instead of hanging forever
        try:
            return AsyncMongoClient(uri, **opts)
        except Exception as exc:  # pymongo.errors.ConfigurationError, InvalidURI, ValueError
            raise ConfigurationError(invalid_uri(uri, exc)) from exc


def unwrap_handler(handler: Any) -> AsyncDatabase[Any]:
    db = handler if isinstance(handler, AsyncDatabase) else getattr(handler, "db", None)
    if not isinstance(db, AsyncDatabase):
        raise ConfigurationError(
            f"db_handler must be a pymongo AsyncDatabase or have a .db attribute holding one, "
            f"got {type(handler).__name__} (motor and sync pymongo databases are not supported)"
        )
    return db


def _configuration_problem(uri: str, exc: PyMongoConfigurationError) -> Exception:
    """Our error for pymongo's ConfigurationError at the first contact (credentials never shown)."""
    resolving = "dns" in str(exc).lower() or "resolution" in str(exc).lower()
    if uri.startswith("mongodb+srv://") and resolving:
        return StorageUnavailable(unresolvable_srv(uri, exc))
    if uri:
        return ConfigurationError(invalid_uri(uri, exc))
    return ConfigurationError(f"the caller's MongoDB client is misconfigured: {exc}")
