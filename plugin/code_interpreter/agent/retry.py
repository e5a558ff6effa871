"""Sending one model request with tenacity: rate limits, HTTP 5xx and connection errors are retried.

The openai client also retries (2 times by default), so with a default client one failing request
may be sent up to ``3 * attempts`` times; create the client with ``max_retries=0`` to let
:class:`~code_interpreter.agent.AgentRetry` be the only policy.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from .results import AgentRetry

__all__ = ["send"]

log = logging.getLogger("code_interpreter.agent")


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)


def _wait(policy: AgentRetry) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        backoff = min(policy.max_wait, policy.initial_wait * 2 ** (state.attempt_number - 1))
        backoff *= 0.5 + random.random() / 2  # jitter: many bots hitting one limit should not retry in step
        exc = state.outcome.exception() if state.outcome else None
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        try:
            after = float(header) if header else 0.0
        except ValueError:
            after = 0.0
        return max(backoff, min(after, policy.max_wait))

    return wait


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("model request failed (%s); retry %d", type(exc).__name__, state.attempt_number)


async def send(policy: AgentRetry, request: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Await ``request(*args)`` under ``policy``; the last error is re-raised when the tries run out."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=retry_if_exception(_retryable),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return await request(*args)
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
