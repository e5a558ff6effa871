"""A multi-round tool loop over ``openai.AsyncOpenAI`` (any ``base_url``): Chat Completions or Responses.

Each round: estimate the request's tokens and cost, apply the user's budget (tokens and sandbox
spent today), record the estimate, send the request (retrying rate limits, 5xx and connection errors
with backoff), record the API's actual ``usage`` beside the estimate, then dispatch every tool call
concurrently, with the request's id in the context so each execution's usage record names it, and
append the results. The loop ends when the model answers without tool calls, the round limit is
reached, or the budget would be passed. :mod:`.wire` holds what differs between the two APIs.

Retries: tenacity owns them here (:mod:`.retry`). The openai client also retries (2 times by
default); create it with ``max_retries=0`` to let :class:`AgentRetry` be the only policy.

Budget: when ``interp.usage.check_budget`` raises :class:`~code_interpreter.errors.BudgetExceeded`
before a request, no request is sent and :func:`run_agent` returns with
``stop_reason="budget_exceeded"`` and a ``final_text`` explaining why (or re-raises with
``raise_on_budget=True``).
"""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import openai

from ..errors import BudgetExceeded
from ..executor import EventCallback
from ..tools import ToolContext, ToolDispatcher, ToolResult
from .results import AgentResult, AgentRetry, RequestRecord
from .retry import send
from .wire import Api, Wire, wire_for

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["AgentResult", "AgentRetry", "RequestRecord", "run_agent"]


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _as_message(m: Any) -> dict[str, Any]:
    if isinstance(m, openai.BaseModel):  # SDK objects, with the API's field names
        return m.to_dict(mode="json", exclude_none=True)
    dump = getattr(m, "model_dump", None)
    if callable(dump):
        return {k: v for k, v in dump(exclude_none=True).items()}
    return dict(m)


async def run_agent(
    client: openai.AsyncOpenAI,
    model: str,
    messages: Sequence[Any],
    context: ToolContext,
    max_rounds: int = 8,
    api: Api = "chat",
    *,
    interpreter: CodeInterpreter | None = None,
    dispatcher: ToolDispatcher | None = None,
    tools: list[dict[str, Any]] | None = None,
    max_output_tokens: int | None = None,
    request_options: Mapping[str, Any] | None = None,
    retry: AgentRetry | None = None,
    raise_on_budget: bool = False,
    on_event: EventCallback | None = None,
) -> AgentResult:
    """Run the model with the code tool until it answers without tool calls.

    Args:
        client: an ``openai.AsyncOpenAI`` (any ``base_url``); ``max_retries=0`` recommended (see module doc).
        model: the model name sent to the API (and used for token estimates and prices).
        messages: the conversation so far (dicts or SDK objects; for ``api="responses"`` any
            Responses input items, ``{"role": …, "content": "…"}`` messages included); not modified.
        context: the trusted user context for tool calls and budgets.
        max_rounds: most model requests; the last one is sent with ``tool_choice="none"`` so the
            model must answer in text.
        api: ``"chat"`` (``client.chat.completions.create``) or ``"responses"``
            (``client.responses.create``; tool results as ``function_call_output`` items).
        interpreter: the CodeInterpreter to use; default the dispatcher's, else the module default.
        dispatcher: a ToolDispatcher (default: one over ``interpreter``).
        tools: tool definitions to send (default ``tool_definitions(api)``, whose description says that
            state persists when ``context.session_id`` is set, and names the runtime's versions).
        max_output_tokens: sent as ``max_completion_tokens`` (Responses: ``max_output_tokens``) and
            used in the estimate.
        request_options: extra keyword arguments for the create call (temperature, reasoning …).
        retry: the retry policy for rate limits, 5xx and connection errors.
        raise_on_budget: re-raise BudgetExceeded instead of returning ``stop_reason="budget_exceeded"``.
        on_event: receives each tool call's live events as they happen (output chunks, stored files,
            done), with ``call_id`` set: a chat bot can edit its message while a long cell runs.

    Returns:
        An AgentResult with the final text, all messages, every request's estimate and usage, and
        the generated files.

    Raises:
        openai.APIError: a request failed after the retries (or with a non-retryable error).
        BudgetExceeded: only with ``raise_on_budget=True``.
        ValueError: ``max_rounds`` below 1, or an unknown ``api``.
    """
    if max_rounds < 1:
        raise ValueError("max_rounds must be at least 1")
    wire = wire_for(api)
    dispatcher = dispatcher or ToolDispatcher(interpreter or await _default_interpreter())
    interp = dispatcher.interp
    await interp.start()
    if tools is None:
        tools = wire.tools(
            sessions=context.session_id is not None, versions=interp.packages.runtime_versions()
        )
    history = [_as_message(m) for m in messages]
    rounds = _Rounds(client, model, wire, interp, context, retry or AgentRetry(), tools, history,
                     request_options or {}, max_output_tokens)  # fmt: skip
    records: list[RequestRecord] = []
    results: list[ToolResult] = []
    final_text = ""
    stop_reason = "max_rounds"
    for round_no in range(1, max_rounds + 1):
        tool_choice = "none" if round_no == max_rounds and tools else None
        try:
            record, turn = await rounds.request(round_no, tool_choice)
        except BudgetExceeded as exc:
            if raise_on_budget:
                raise
            final_text, stop_reason = f"Stopped before request {round_no}: {exc}", "budget_exceeded"
            break
        records.append(record)
        final_text = turn.text
        if not turn.calls:
            stop_reason = "completed"
            break
        # Every tool call gets its answer, even on the last round, so the history stays valid for the API.
        # The request id rides with the calls, so each execution's usage record names this request.
        linked_context = dataclasses.replace(context, request_id=record.request_id)
        round_results = await dispatcher.dispatch_all(turn.calls, linked_context, on_event=on_event)
        results.extend(round_results)
        history.extend(wire.answers(round_results))
    generated = tuple(f for r in results for f in r.generated_files)
    return AgentResult(final_text, history, tuple(records), tuple(results), stop_reason, generated)


async def _default_interpreter() -> CodeInterpreter:
    from ..compat import default_interpreter

    return await default_interpreter()


@dataclasses.dataclass(slots=True)
class _Rounds:
    """One conversation's model requests: each estimated, budgeted, recorded, sent and recorded again."""

    client: openai.AsyncOpenAI
    model: str
    wire: Wire
    interp: CodeInterpreter
    context: ToolContext
    policy: AgentRetry
    tools: list[dict[str, Any]]
    history: list[dict[str, Any]]
    options: Mapping[str, Any]
    max_output_tokens: int | None

    async def request(self, round_no: int, tool_choice: str | None) -> tuple[RequestRecord, Any]:
        """Send one request (BudgetExceeded before it, when it would pass the budget); its record and turn."""
        usage, ctx = self.interp.usage, self.context
        estimate = await self.interp.token_counter.estimate(
            self.model, self.history, tools=self.tools or None, tool_choice=tool_choice,
            max_output_tokens=self.max_output_tokens,
        )  # fmt: skip
        await _maybe_await(usage.check_budget(ctx.user_id, estimate))
        request_id = uuid.uuid4().hex

        async def write(actual: Any) -> None:
            await _maybe_await(usage.record_usage(user_id=ctx.user_id, model=self.model, estimate=estimate,
                                                  usage=actual, request_id=request_id,
                                                  session_id=ctx.session_id))  # fmt: skip

        await write(None)
        body = self.wire.request(self.history, self.tools, tool_choice, self.max_output_tokens)
        response = await send(
            self.policy, self.wire.create, self.client, self.model, {**self.options, **body}
        )
        turn = self.wire.read(response)
        if turn.usage is not None:
            await write(turn.usage)
        self.history.extend(turn.items)
        record = RequestRecord(
            round_no, request_id, estimate, turn.usage, turn.finish_reason, len(turn.calls)
        )
        return record, turn
