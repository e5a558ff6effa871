"""The tool schema, its renderings, argument validation and the dispatcher (real sandbox, real database)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletionMessageToolCall

from code_interpreter.executor import ExecutionEvent
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.ledger import ExecutionLink, ExecutionUsage, current_link
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, ToolDispatcher, ToolResult, images_message, tool_definitions
from code_interpreter.tools.schema import load_schema, nullable_optionals, validate_arguments

REPO = Path(__file__).resolve().parent.parent


def call(arguments: Any, name: str = "execute_python_code", call_id: str = "call_1") -> dict[str, Any]:
    """A Chat Completions tool call dict; non-string arguments are JSON-encoded."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


# -- the schema ---------------------------------------------------------------------------
def test_schema_is_valid_json_schema_and_strict_compatible() -> None:
    d = load_schema()
    params = d["parameters"]
    jsonschema.Draft202012Validator.check_schema(params)
    jsonschema.Draft7Validator.check_schema(params)
    assert d["name"] == "execute_python_code"
    assert d["strict"] is True
    # OpenAI strict mode: every property required, no extra keys; optional ones are nullable.
    assert params["additionalProperties"] is False
    assert set(params["required"]) == set(params["properties"])
    assert nullable_optionals(params) == {"timeout", "install_packages"}
    assert params["properties"]["code"]["type"] == "string"
    assert params["properties"]["timeout"]["minimum"] == 1
    assert params["properties"]["timeout"]["maximum"] == 300
    assert params["properties"]["install_packages"]["items"] == {"type": "string"}
    for promise in ("load_file(", "FILES", "print", "no network", "install"):
        assert promise.lower() in d["description"].lower(), promise


def test_packaged_schema_is_the_canonical_file() -> None:
    canonical = json.loads((REPO / "tool_schemas" / "execute_python_code.json").read_text())
    assert load_schema() == canonical


def test_chat_rendering() -> None:
    [tool] = tool_definitions("chat")
    assert set(tool) == {"type", "function"}
    assert tool["type"] == "function"
    fn = tool["function"]
    assert set(fn) == {"name", "description", "parameters", "strict"}
    assert fn["name"] == "execute_python_code"
    assert fn["parameters"] == load_schema()["parameters"]


def test_responses_rendering() -> None:
    [tool] = tool_definitions("responses")
    assert set(tool) == {"type", "name", "description", "parameters", "strict"}
    assert tool["type"] == "function"
    assert tool["name"] == "execute_python_code"
    assert tool["strict"] is True
    assert tool["parameters"] == load_schema()["parameters"]


def test_rendering_rejects_unknown_api_and_returns_copies() -> None:
    with pytest.raises(ValueError, match="chat"):
        tool_definitions("assistants")  # type: ignore[arg-type]
    tool_definitions()[0]["function"]["parameters"]["properties"].clear()
    assert "code" in tool_definitions()[0]["function"]["parameters"]["properties"]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"code": "print(1)", "timeout": None, "install_packages": None}, None),
        ({"code": "print(1)"}, None),  # a non-strict provider omitting the optional keys
        ({"code": "print(1)", "timeout": 30, "install_packages": ["sympy"]}, None),
        ({}, "missing argument: 'code'"),
        ({"code": 5}, "argument 'code' must be string, got integer"),
        ({"code": "x", "timeout": "60"}, "argument 'timeout' must be integer or null, got string"),
        ({"code": "x", "timeout": 0}, "argument 'timeout' must be between 1 and 300, got 0"),
        ({"code": "x", "timeout": 301}, "between 1 and 300, got 301"),
        ({"code": "x", "timeout": 2.5}, "must be integer or null, got number"),
        ({"code": "x", "timeout": True}, "must be integer or null, got boolean"),
        ({"code": "x", "install_packages": "numpy"}, "argument 'install_packages' must be array or null"),
        ({"code": "x", "install_packages": [1]}, "argument 'install_packages.0' must be string, got integer"),
        ({"code": "x", "user_id": 7}, "unexpected argument(s) 'user_id'"),
        (["print(1)"], "the arguments must be a JSON object, got array"),
    ],
)
def test_validate_arguments(args: Any, problem: str | None) -> None:
    normalized, problems = validate_arguments("execute_python_code", args)
    if problem is None:
        assert problems == []
        assert normalized["code"] == "print(1)"
        assert {"timeout", "install_packages"} <= set(normalized)
    else:
        assert any(problem in p for p in problems), problems


# -- dispatcher refusals (nothing reaches the sandbox) -----------------------------------------
@pytest.fixture
def dispatcher(make_settings: Callable[..., Settings]) -> ToolDispatcher:
    """A dispatcher over an interpreter that is never started: refusals must not need it."""
    return ToolDispatcher(CodeInterpreter(make_settings()))


CTX = ToolContext(user_id=42)


def _refused(r: ToolResult, *needles: str) -> None:
    assert r.is_error
    assert r.content.startswith("Error: ")
    assert r.result["success"] is False
    assert r.result["generated_files"] == []
    for n in needles:
        assert n in r.content, (n, r.content)
    assert r.message == {"role": "tool", "tool_call_id": r.tool_call_id, "content": r.content}


async def test_malformed_json(dispatcher: ToolDispatcher) -> None:
    r = await dispatcher.dispatch(call('{"code": "print(1)"'), CTX)
    _refused(r, "not valid JSON", "line 1 column", '"code":')
    assert r.tool_call_id == "call_1"


async def test_unknown_tool(dispatcher: ToolDispatcher) -> None:
    r = await dispatcher.dispatch(call({"code": "print(1)"}, name="python"), CTX)
    _refused(r, "unknown tool 'python'", "execute_python_code(code, timeout, install_packages)")


async def test_missing_code(dispatcher: ToolDispatcher) -> None:
    r = await dispatcher.dispatch(call({"timeout": 10}), CTX)
    _refused(r, "missing argument: 'code'", "Retry with arguments like")


async def test_injected_user_id_is_refused(dispatcher: ToolDispatcher) -> None:
    r = await dispatcher.dispatch(call({"code": "print(open('/etc/passwd').read())", "user_id": 1}), CTX)
    _refused(r, "unexpected argument(s) 'user_id'", "set by the application")


async def test_wrong_type_and_empty_arguments(dispatcher: ToolDispatcher) -> None:
    _refused(await dispatcher.dispatch(call({"code": ["print(1)"]}), CTX), "'code' must be string, got array")
    _refused(await dispatcher.dispatch(call(""), CTX), "missing argument: 'code'")
    _refused(await dispatcher.dispatch(call({"code": "   "}), CTX), "the code is empty")


async def test_five_megabyte_code_is_refused(dispatcher: ToolDispatcher) -> None:
    code = "x = 1\n" * (5 * 2**20 // 6)
    r = await dispatcher.dispatch(call({"code": code}), CTX)
    _refused(r, f"{dispatcher.interp.settings.max_code_bytes:,} bytes", "load_file")


async def test_code_over_the_limit_after_parsing(make_settings: Callable[..., Settings]) -> None:
    d = ToolDispatcher(CodeInterpreter(make_settings(max_code_bytes=1000)))
    r = await d.dispatch(call({"code": "#" * 1500}), CTX)
    _refused(r, "the code is 1,500 bytes; the limit is 1,000 bytes")


async def test_install_refused_when_the_context_forbids_it(dispatcher: ToolDispatcher) -> None:
    ctx = ToolContext(user_id=42, allow_install=False)
    r = await dispatcher.dispatch(call({"code": "import sympy", "install_packages": ["sympy"]}), ctx)
    _refused(r, "installing packages is disabled")


async def test_unrecognised_call_shape(dispatcher: ToolDispatcher) -> None:
    _refused(await dispatcher.dispatch(42, CTX), "unrecognised tool call")
    _refused(await dispatcher.dispatch({"foo": 1}, CTX), "unrecognised tool call")


def test_context_is_frozen_and_normalises_file_ids() -> None:
    ctx = ToolContext(user_id=1, allowed_file_ids=["b", "a"])  # type: ignore[arg-type]
    assert ctx.allowed_file_ids == frozenset({"a", "b"})
    with pytest.raises(AttributeError):
        ctx.user_id = 2  # type: ignore[misc]
    assert ToolContext(user_id=1, model="gpt-4o").wants_images
    assert not ToolContext(user_id=1, model="gpt-3.5-turbo").wants_images
    assert not ToolContext(user_id=1, model="gpt-4o", attach_images=False).wants_images


# -- dispatcher with the sandbox ---------------------------------------------------------------
@pytest.fixture
async def parallel_interp(
    make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> AsyncIterator[CodeInterpreter]:
    """An interpreter that lets one user run two executions at once."""
    settings = make_settings(runtime_dir=sandbox_runtime.root, max_parallel=2, max_parallel_per_user=2)
    async with CodeInterpreter(settings) as interp:
        yield interp


async def test_success_chart_and_image_parts(interp: CodeInterpreter) -> None:
    up = await interp.files.upload_file(7, b"x,y\n1,2\n3,5\n", "points.csv")
    code = (
        f"df = load_file({up['file_id']!r})\n"
        "print('sum', int(df['y'].sum()))\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot(df['x'], df['y'])\n"
        "plt.savefig('line.png')\n"
    )
    ctx = ToolContext(user_id=7, model="gpt-4o")
    r = await ToolDispatcher(interp).dispatch(
        ChatCompletionMessageToolCall.model_validate(call({"code": code})), ctx
    )
    assert not r.is_error, r.content
    assert r.content.startswith("Status: success in ")
    assert "sum 7" in r.content
    [png] = [f for f in r.generated_files if f["filename"] == "line.png"]
    assert png["data"].startswith(b"\x89PNG")
    assert "line.png (image/png, " in r.content and f"file_id {png['file_id']}" in r.content
    assert await interp.files.read_file(png["file_id"], 7) == png["data"]
    assert r.images and r.images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    msg = images_message([r])
    assert msg is not None and msg["role"] == "user"
    assert [p["type"] for p in msg["content"]] == ["text", *(["image_url"] * len(r.images))]
    assert "data" not in json.dumps(r.to_dict()["result"]["generated_files"])


async def test_failure_returns_traceback_and_retry_hint(interp: CodeInterpreter) -> None:
    r = await ToolDispatcher(interp).dispatch(
        call({"code": "print('before')\n1 / 0\n"}), ToolContext(user_id=8)
    )
    assert r.is_error
    assert r.content.startswith("Status: failed")
    assert "before" in r.content
    assert "ZeroDivisionError" in r.content and "Traceback" in r.content
    assert r.content.rstrip().endswith("call execute_python_code again.")


async def test_timeout_capped_by_context(interp: CodeInterpreter) -> None:
    ctx = ToolContext(user_id=9, max_timeout=1)
    r = await ToolDispatcher(interp).dispatch(
        call({"code": "import time; time.sleep(5)", "timeout": 120}), ctx
    )
    assert r.is_error
    assert "exceeds this user's limit; used 1 s" in r.content
    error = (r.result.get("error") or "").lower()
    assert "timeout" in error or "timed out" in error, r.result


async def test_responses_api_item(interp: CodeInterpreter) -> None:
    item = {
        "type": "function_call",
        "call_id": "fc_1",
        "name": "execute_python_code",
        "arguments": '{"code": "print(6*7)"}',
    }
    r = await ToolDispatcher(interp).dispatch(item, ToolContext(user_id=10))
    assert r.output_item == {"type": "function_call_output", "call_id": "fc_1", "output": r.content}
    assert "42" in r.content


async def test_files_limited_to_the_context(interp: CodeInterpreter) -> None:
    a = await interp.files.upload_file(11, b"alpha", "a.txt")
    b = await interp.files.upload_file(11, b"beta", "b.txt")
    code = "print(sorted(FILES))"
    only_a = ToolContext(user_id=11, allowed_file_ids=frozenset({a["file_id"]}))
    r = await ToolDispatcher(interp).dispatch(call({"code": code}), only_a)
    assert a["file_id"] in r.content and b["file_id"] not in r.content
    r_all = await ToolDispatcher(interp).dispatch(call({"code": code}), ToolContext(user_id=11))
    assert a["file_id"] in r_all.content and b["file_id"] in r_all.content
    other = await ToolDispatcher(interp).dispatch(call({"code": code}), ToolContext(user_id=12))
    assert a["file_id"] not in other.content
    # Another user's id in the allowed set is as absent as an expired one: a note, not a failure.
    assert await interp.files.delete_user_file(b["file_id"], 11)
    ctx = ToolContext(user_id=11, allowed_file_ids=frozenset({a["file_id"], b["file_id"]}))
    r = await ToolDispatcher(interp).dispatch(call({"code": code}), ctx)
    assert not r.is_error, r.content
    assert f"['{a['file_id']}']" in r.content
    assert f"file(s) {b['file_id']} expired or were deleted" in r.content


async def test_two_parallel_calls_overlap_and_keep_order(parallel_interp: CodeInterpreter) -> None:
    # Each call prints when it started and ended; overlapping intervals prove they ran concurrently.
    code = "import time\nt0 = time.time()\ntime.sleep(1.0)\nprint('{tag}', t0, time.time())\n"
    calls = [call({"code": code.format(tag=tag)}, call_id=f"call_{tag}") for tag in ("first", "second")]
    results = await ToolDispatcher(parallel_interp).dispatch_all(calls, ToolContext(user_id=13))
    assert [r.tool_call_id for r in results] == ["call_first", "call_second"]
    spans = []
    for r, tag in zip(results, ("first", "second"), strict=True):
        assert not r.is_error, r.content
        line = next(ln for ln in r.content.splitlines() if ln.startswith(tag))
        spans.append(tuple(map(float, line.split()[1:])))
    (s1, e1), (s2, e2) = spans
    assert s1 < e2 and s2 < e1, spans


async def test_dispatch_all_mixes_refusals_and_runs(interp: CodeInterpreter) -> None:
    calls = [
        call("{bad", call_id="a"),
        call({"code": "print('ok')"}, call_id="b"),
        call({"x": 1}, name="nope", call_id="c"),
    ]
    results = await ToolDispatcher(interp).dispatch_all(calls, ToolContext(user_id=14))
    assert [r.tool_call_id for r in results] == ["a", "b", "c"]
    assert [r.is_error for r in results] == [True, False, True]
    assert all(r.content for r in results)


# -- the cost ledger: budgets and links ---------------------------------------------------------
async def test_code_is_refused_before_running_once_the_budget_is_spent(
    make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> None:
    settings = make_settings(runtime_dir=sandbox_runtime.root, daily_budget_usd=0.001)
    async with CodeInterpreter(settings) as interp:
        # What the run path records for an earlier execution of user 15: $0.0014 of CPU.
        spent = await interp.usage.record_execution(
            ExecutionUsage(user_id=15, cpu_seconds=100.0, peak_memory_mb=0.0, wall_seconds=0.0)
        )
        assert spent.cost_usd == pytest.approx(0.0014)
        code = "open('ran.txt', 'w').write('ran')\nprint('ran')"
        dispatcher = ToolDispatcher(interp)
        r = await dispatcher.dispatch(call({"code": code}), ToolContext(user_id=15))
        assert r.is_error and r.result["error_type"] == "BudgetExceeded"
        assert "$0.0014 today ($0.00 tokens, $0.0014 sandbox) of the $0.001 daily budget" in r.content
        assert "no code runs" in r.content
        assert await interp.files.list_user_files(15) == []  # it did not run: nothing was stored
        other = await dispatcher.dispatch(call({"code": code}), ToolContext(user_id=16))
        assert not other.is_error and "ran" in other.content


async def test_each_execution_knows_its_tool_call_and_request(parallel_interp: CodeInterpreter) -> None:
    """Concurrent calls of one model request: each execution's record (the run path's) names its call."""
    seen: list[ExecutionLink] = []

    async def on_event(event: ExecutionEvent) -> None:
        if event.kind == "done":
            seen.append(current_link())

    calls = [call({"code": f"print({i})"}, call_id=f"call_{i}") for i in range(2)]
    ctx = ToolContext(user_id=18, request_id="req-42")
    results = await ToolDispatcher(parallel_interp).dispatch_all(calls, ctx, on_event=on_event)
    assert [r.is_error for r in results] == [False, False]
    assert sorted(seen, key=lambda link: link.tool_call_id or "") == [
        ExecutionLink("call_0", "req-42"),
        ExecutionLink("call_1", "req-42"),
    ]
    records = await parallel_interp.usage.execution_records(request_id="req-42")
    assert sorted(r.tool_call_id or "" for r in records) == ["call_0", "call_1"]
    by_id = {r.execution_id: r for r in records}
    for result in results:  # what each tool result carries is its own record
        assert by_id[result.result["usage"]["execution_id"]].tool_call_id == result.tool_call_id
    assert current_link() == ExecutionLink()  # nothing leaks out of the dispatcher
