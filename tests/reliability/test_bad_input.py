"""Bad input: a generated corpus of tool calls and file uploads never breaks the host.

Hypothesis generates tool calls (random JSON, wrong types, deep nesting, huge strings, random bytes
as arguments, unknown keys, missing code, unknown tools, things that are not tool calls at all)
and sends them through the ToolDispatcher, and generates uploads (random bytes, empty and
oversized data, names with NUL, traversal, controls, unicode, huge names) through the FileManager.
Proves: no exception ever reaches the host; every tool call gets a ToolResult whose content is
non-empty text of a size a model can read, consistent with its ``result`` dict; valid calls mixed
into the corpus run and print the right thing; every upload answers with a ``{"success": …}`` dict,
and a successful one stored a harmless name and exactly the bytes given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, ToolDispatcher, ToolResult

# A refusal repeats at most a short excerpt of what it refuses; successful output is capped by
# max_output_bytes (head and tail) plus the result's notes.
MAX_CONTENT_CHARS = 20_000
MAX_CODE_BYTES = 50_000
MAX_FILE_SIZE = 64 * 1024
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def nested(depth: int) -> str:
    """Arguments whose code value is ``depth`` nested JSON arrays."""
    return '{"code": ' + "[" * depth + "]" * depth + "}"


def _args_dicts() -> st.SearchStrategy[dict[str, Any]]:
    """Argument objects: right keys with wrong values, unknown keys, missing code, injected user ids."""
    return st.fixed_dictionaries(
        {},
        optional={
            "code": st.one_of(st.text(max_size=200), wrong_types),
            "timeout": st.one_of(
                st.none(), st.integers(-(10**12), 10**12), st.floats(), st.text(max_size=20)
            ),
            "install_packages": st.one_of(
                st.none(),
                st.text(max_size=20),
                st.lists(st.one_of(st.text(max_size=30), st.integers()), max_size=4),
            ),
            "user_id": st.integers(),
            "files": st.lists(st.text(max_size=20), max_size=3),
        },
    )


def _arguments() -> st.SearchStrategy[Any]:
    return st.one_of(
        json_values.map(json.dumps),  # valid JSON, rarely an object of the right shape
        _args_dicts().map(json.dumps),
        _args_dicts(),  # LangChain passes a dict
        st.text(max_size=300),  # not JSON
        st.binary(max_size=300),  # random bytes as the arguments
    )


# The extremes, each once: generating them at random would be slow, and shrinking them slower.
EXTREME_ARGUMENTS = {
    # Under the arguments' size cap (2 * max_code_bytes), so these reach the JSON parser and the schema.
    "deep nesting": nested(20_000),  # past the JSON parser's recursion limit
    "code far past the cap": '{"code": "' + "x" * 3_000_000 + '"}',
    "code just past the cap": json.dumps(
        {"code": "#" * (MAX_CODE_BYTES + 1), "timeout": None, "install_packages": None}
    ),
    "huge unknown key": '{"code": "print(1)", "timeout": 5, "install_packages": null, "'
    + "k" * 80_000
    + '": 1}',
    "many unknown keys": json.dumps({"code": "print(1)", **{f"key{i}": i for i in range(2000)}}),
    "huge package names": json.dumps(
        {"code": "print(1)", "timeout": None, "install_packages": ["x" * 30_000] * 3}
    ),
    "huge timeout string": json.dumps(
        {"code": "print(1)", "timeout": "9" * 90_000, "install_packages": None}
    ),
    "huge timeout number": json.dumps({"code": "print(1)", "timeout": 10**400, "install_packages": None}),
    "400 wrong-typed packages": json.dumps(
        {"code": "print(1)", "timeout": None, "install_packages": list(range(400))}
    ),
    "empty code": json.dumps({"code": "", "timeout": None, "install_packages": None}),
    "missing code": json.dumps({"timeout": 5, "install_packages": None}),
    "NUL in code": json.dumps({"code": "\x00print(1)", "timeout": None, "install_packages": None}),
    "lone surrogate in code": '{"code": "print(\'\\ud800\')", "timeout": null, "install_packages": null}',
    "injected package spec": json.dumps(
        {"code": "print(1)", "timeout": None, "install_packages": ["numpy; rm -rf /"]}
    ),
    "injected user id": json.dumps(
        {"code": "print(1)", "timeout": None, "install_packages": None, "user_id": 1}
    ),
    "empty string": "",
    "null": "null",
    "array": "[]",
    "random bytes": bytes(range(256)) * 4,
    "not JSON": "{code: print(1)}",
}


def valid_call() -> st.SearchStrategy[tuple[dict[str, Any], int]]:
    """A call that must run: prints a number the test knows."""
    return st.integers(-(10**6), 10**6).map(
        lambda n: (
            {"code": f"print({n} * 3)", "timeout": 20, "install_packages": None},
            n * 3,
        )
    )


def _call(name: Any, arguments: Any, call_id: Any) -> Any:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


tool_calls = st.one_of(
    st.builds(_call, st.just("execute_python_code"), _arguments(), st.text(max_size=20)),
    st.builds(
        _call, st.one_of(st.text(max_size=30), wrong_types), _arguments(), st.one_of(st.text(), wrong_types)
    ),
    st.builds(  # a Responses API item
        lambda a: {"type": "function_call", "call_id": "c1", "name": "execute_python_code", "arguments": a},
        _arguments(),
    ),
    st.builds(lambda a: {"name": "execute_python_code", "args": a, "id": "lc"}, _arguments()),  # LangChain
    wrong_types,  # not a tool call at all
    st.text(max_size=50),
    st.binary(max_size=50),
)


def check_result(res: Any) -> None:
    """What every tool result must be: readable, bounded, consistent."""
    assert isinstance(res, ToolResult)
    assert isinstance(res.content, str) and res.content.strip()
    assert len(res.content) <= MAX_CONTENT_CHARS, f"{len(res.content)} chars: {res.content[:300]}"
    assert res.message["content"] == res.content and res.message["role"] == "tool"
    assert isinstance(res.result, dict) and isinstance(res.result.get("success"), bool)
    assert res.is_error == (not res.result["success"])
    # The dispatcher's catch-all ("internal error … not caused by your code") is a safety net for
    # bugs: bad arguments must be recognised as such and answered with what to fix.
    assert not res.content.startswith("Error: internal error"), res.content[:300]
    json.dumps(res.to_dict())  # plain data the host can log


@pytest.fixture
async def small_interp(make_settings: Callable[..., Settings], sandbox_runtime: Any) -> AsyncIterator[Any]:
    """An interpreter with small code and file limits (so the corpus reaches them cheaply)."""
    s = make_settings(
        runtime_dir=sandbox_runtime.root,
        max_code_bytes=MAX_CODE_BYTES,
        max_file_size=MAX_FILE_SIZE,
        preload_modules=(),
    )
    async with CodeInterpreter(s) as interp:
        yield interp


@EXAMPLES
@given(call=tool_calls)
async def test_dispatcher_answers_every_generated_call(small_interp: CodeInterpreter, call: Any) -> None:
    res = await ToolDispatcher(small_interp).dispatch(call, ToolContext(user_id=11))
    check_result(res)


@pytest.mark.parametrize("name", sorted(EXTREME_ARGUMENTS))
async def test_dispatcher_answers_extreme_calls(small_interp: CodeInterpreter, name: str) -> None:
    call = _call("execute_python_code", EXTREME_ARGUMENTS[name], f"extreme-{name}")
    res = await ToolDispatcher(small_interp).dispatch(call, ToolContext(user_id=11))
    check_result(res)
    assert not res.result["success"], res.content
    assert res.tool_call_id == f"extreme-{name}"


@settings(EXAMPLES, max_examples=12)
@given(case=valid_call(), as_text=st.booleans())
async def test_valid_calls_in_the_corpus_run(
    small_interp: CodeInterpreter, case: tuple[dict[str, Any], int], as_text: bool
) -> None:
    args, expected = case
    call = _call("execute_python_code", json.dumps(args) if as_text else args, "ok")
    res = await ToolDispatcher(small_interp).dispatch(call, ToolContext(user_id=12))
    check_result(res)
    assert res.result["success"], res.content
    assert res.result["output"] == f"{expected}\n"


names = st.one_of(
    st.text(max_size=80),
    st.text(max_size=3000),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "/etc/shadow",
            "a\x00b.csv",
            "..\\..\\x.txt",
            "CON.txt",
            ".bashrc",
            "\u202egnp.exe",
            "données été.csv",
            "数据.xlsx",
            " ",
            "a" * 5000 + ".csv",
            "x/" * 500 + "y.txt",
            "\n\r\t.py",
        ]
    ),
)
payloads = st.one_of(
    st.binary(max_size=4000),
    st.just(b""),
    st.integers(MAX_FILE_SIZE - 2, MAX_FILE_SIZE + 2).map(lambda n: bytes([n % 251]) * n),
)


@EXAMPLES
@given(data=payloads, filename=names, user=st.one_of(st.integers(0, 2**63), st.text(min_size=1, max_size=40)))
async def test_uploads_answer_with_a_success_dict(
    small_interp: CodeInterpreter, data: bytes, filename: str, user: int | str
) -> None:
    files = small_interp.files
    if isinstance(user, str) and not user.strip():
        user = "u"  # the user id comes from the host application and is never empty
    r = await files.upload_file(user, data, filename)
    assert isinstance(r, dict) and isinstance(r.get("success"), bool)
    if not r["success"]:
        assert isinstance(r.get("error"), str) and r["error"]
        assert len(data) > MAX_FILE_SIZE, r  # the only refusal these inputs deserve
        return
    assert len(data) <= MAX_FILE_SIZE
    stored = r["filename"]
    assert stored and "/" not in stored and "\\" not in stored and "\x00" not in stored
    assert not stored.startswith(".") and len(stored.encode()) <= 255
    assert r["sha256"] == hashlib.sha256(data).hexdigest() and r["file_size"] == len(data)
    assert await files.read_file(r["file_id"], user) == data
    assert (await files.get_file(r["file_id"], user) or {}).get("filename") == stored
    assert await files.delete_user_file(r["file_id"], user)
