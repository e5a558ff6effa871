"""Bounded retries of MongoDB operations (tenacity), ending in :class:`StorageUnavailable`.

Only *transient* driver faults are retried: a lost connection (``AutoReconnect``, which covers
``NotPrimaryError``), no reachable server (``ServerSelectionTimeoutError``), a network timeout
and other ``ConnectionFailure``s. Everything else (a duplicate key, a failed validation) is a
real answer from the server and is raised at once. Retries are bounded both in attempts and in
total time, so a dead server gives the caller a clear error naming it instead of a hang.

Between attempts an optional ``on_retry`` hook runs: the embedded-server launcher uses it to
restart a SecantusDB that crashed, so the next attempt finds it up again.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from pymongo.errors import ConnectionFailure
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from ..errors import StorageUnavailable

__all__ = [
    "TRANSIENT_ERRORS",
    "RetryContext",
    "RetryPolicy",
    "context_for",
    "register_context",
    "server_name",
    "with_retries",
]

T = TypeVar("T")

# AutoReconnect, NetworkTimeout and ServerSelectionTimeoutError all derive from ConnectionFailure.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailure,)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry a transient MongoDB fault before giving up."""

    attempts: int = 6
    """Most attempts in all (the first one included)."""
    total_s: float = 8.0
    """No new attempt starts after this many seconds since the first."""
    wait_initial_s: float = 0.1
    """First back-off; doubles each attempt."""
    wait_max_s: float = 1.0
    """Largest back-off between two attempts."""
    server_selection_ms: int = 2000
    """serverSelectionTimeoutMS for clients this package opens (one attempt's wait for a server)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return asdict(self)


OnRetry = Callable[[BaseException], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryContext:
    """What a client's operations need to retry well: the policy, a recovery hook, the server's name."""

    policy: RetryPolicy
    """Bounds of the retries."""
    on_retry: OnRetry | None = None
    """Awaited before each new attempt (restarts a crashed embedded server)."""
    server: str | None = None
    """Name of the server for error messages (credentials never included)."""

    async def run(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """``op`` under these retries (:func:`with_retries`); ``what`` names it in the error."""
        return await with_retries(
            op, what=what, policy=self.policy, server=self.server or "MongoDB", on_retry=self.on_retry
        )


# Storage registers its client here so a FileManager built from a bare AsyncDatabase still
# gets the right policy and the embedded server's restart hook (the seed passes only the db).
_CONTEXTS: weakref.WeakKeyDictionary[Any, RetryContext] = weakref.WeakKeyDictionary()


def register_context(client: Any, context: RetryContext) -> None:
    """Attach retry behaviour to a client (an AsyncMongoClient) for every user of its databases."""
    _CONTEXTS[client] = context


def context_for(db: Any) -> RetryContext:
    """The context registered for ``db``'s client, or a default one."""
    client = getattr(db, "client", None)
    if client is not None:
        try:
            ctx = _CONTEXTS.get(client)
        except TypeError:  # not weak-referenceable: no registration possible
            ctx = None
        if ctx is not None:
            return ctx
    return RetryContext(RetryPolicy(), None, server_name(client))


def server_name(client: Any) -> str:
    """``host:port[,host:port…]`` of a client's seeds, for error messages."""
    try:
        keys = client.topology_description.server_descriptions().keys()
        names = [f"{h}:{p}" for h, p in keys]
    except Exception:  # a foreign object without a topology: a generic name is enough
        return "MongoDB"
    return ",".join(sorted(names)) or "MongoDB"


async def with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy | None = None,
    server: str = "MongoDB",
    on_retry: OnRetry | None = None,
) -> T:
    """Run ``op`` and retry it on transient MongoDB faults; raise StorageUnavailable when they persist.

    Args:
        op: a zero-argument coroutine function; it must be safe to run again (idempotent).
        what: a few words naming the operation, for the error message ("upload report.csv").
        policy: the bounds (default :class:`RetryPolicy`).
        server: the server's name for the error message.
        on_retry: awaited with the failure before each new attempt.

    Raises:
        StorageUnavailable: the fault persisted past the policy's attempts or time.
    """
    policy = policy or RetryPolicy()

    async def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                try:
                    await on_retry(exc)
                except StorageUnavailable:
                    raise
                except Exception:  # a failed recovery is just another failed attempt
                    pass

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        stop=stop_after_attempt(max(1, policy.attempts)) | stop_after_delay(policy.total_s),
        wait=wait_exponential(multiplier=policy.wait_initial_s, max=policy.wait_max_s),
        before_sleep=before_sleep,
        reraise=False,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await op()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        n = exc.last_attempt.attempt_number
        raise StorageUnavailable(
            f"MongoDB at {server} is unavailable ({what}): {type(last).__name__}: {_short(last)} "
            f"after {n} attempt(s); check that the server is running and MONGODB_URI is right"
        ) from last
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


def _short(exc: BaseException | None, limit: int = 200) -> str:
    text = str(exc) if exc is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
