"""What the model reads of a result is bounded in tokens: exact against the tokenizer, head and tail kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from code_interpreter import tokens
from code_interpreter.errors import ConfigurationError
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, ToolDispatcher
from code_interpreter.tools.render import render_content
from code_interpreter.tools.trim import Cut, fit_streams

FLOOD = "".join(f"row {i}: value={i * 3.14159:.5f} name=item_{i}\n" for i in range(3000))
JAPANESE = "データ分析の結果、平均値は四十二です。\n" * 2000
EMOJI = "📈🐍" * 20_000  # 4-byte characters, no line breaks: token boundaries fall inside characters
ONE_LINE = "x" * 60_000


def _parts(original: str, cut: Cut) -> tuple[str, str, str]:
    assert cut.head_chars is not None and cut.tail_chars is not None
    head = original[: cut.head_chars]
    tail = original[len(original) - cut.tail_chars :] if cut.tail_chars else ""
    return head, original[len(head) : len(original) - len(tail)], tail


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", None])
@pytest.mark.parametrize(("text", "budget"), [(FLOOD, 400), (JAPANESE, 301), (EMOJI, 99), (ONE_LINE, 50)])
def test_a_long_stream_keeps_head_and_tail_within_the_budget_exactly(
    text: str, budget: int, model: str | None
) -> None:
    counted_as = model or "gpt-4o"  # unknown or absent models count with o200k_base, as gpt-4o does
    [cut] = fit_streams([text], budget, model)
    head, middle, tail = _parts(text, cut)
    assert head and tail and middle
    # The kept text, tokenized on its own by the model's tokenizer, fits the budget ...
    kept = tokens.count_text_tokens(head, counted_as) + tokens.count_text_tokens(tail, counted_as)
    assert kept == cut.kept_tokens and budget // 2 < kept <= budget
    # ... and the marker tells exactly what was cut.
    assert cut.cut_tokens == tokens.count_text_tokens(middle, counted_as)
    assert cut.cut_lines == middle.count("\n")
    assert cut.text.startswith(head) and cut.text.endswith(tail)
    marker = cut.text[len(head) : len(cut.text) - len(tail)].strip("\n")
    lines = f"{cut.cut_lines:,} lines" if cut.cut_lines else "of one line"
    assert marker.startswith(f"… [{cut.cut_tokens:,} tokens") and lines in marker
    assert "\ufffd" not in cut.text  # no character was split


def test_cuts_fall_on_line_breaks_when_there_are_lines() -> None:
    [cut] = fit_streams([FLOOD], 400, "gpt-4o")
    head, _, tail = _parts(FLOOD, cut)
    assert head.endswith("\n") and head.startswith("row 0: ")
    assert tail.endswith("name=item_2999\n") and tail.startswith("row ")


def test_small_streams_are_not_tokenized_and_never_changed() -> None:
    streams = ["42\n", "Traceback …\nKeyError: 'x'", ""]
    assert fit_streams(streams, 4000, "gpt-4o") == [Cut(s) for s in streams]
    # Within the budget in tokens but not in bytes: counted, kept whole.
    [cut] = fit_streams(["word " * 1000], 1500, "gpt-4o")
    assert cut.text == "word " * 1000 and cut.kept_tokens == tokens.count_text_tokens(
        "word " * 1000, "gpt-4o"
    )


def test_a_short_traceback_is_never_cut_to_make_room_for_a_flood() -> None:
    traceback = "Traceback (most recent call last):\n  File \"<cell>\", line 3\nKeyError: 'revnue'"
    out, err, stderr = fit_streams([FLOOD, traceback, "warning: x\n" * 5000], 600, "gpt-4o")
    assert err.text == traceback and err.cut_tokens == 0
    t = tokens.count_text_tokens(traceback, "gpt-4o")
    # The two floods share what the traceback left, equally.
    share = (600 - t) // 2
    for flood in (out, stderr):
        # Up to its share; cutting at line breaks may give back less than a line (about 15 tokens) per side.
        assert flood.kept_tokens is not None and share - 2 * 15 <= flood.kept_tokens <= share + 1


@pytest.mark.parametrize("budget", [0, -5, 1.5, True])
def test_a_budget_must_be_a_positive_int(budget: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        fit_streams(["x"], budget, "gpt-4o")  # type: ignore[arg-type]


def test_the_setting_is_validated_and_read_from_the_environment() -> None:
    assert Settings().max_tool_output_tokens == 4000
    with pytest.raises(ConfigurationError, match="max_tool_output_tokens must be positive"):
        Settings(max_tool_output_tokens=0)
    env = {"CODE_INTERPRETER_MAX_TOOL_OUTPUT_TOKENS": "1200"}
    assert Settings.from_env(env).max_tool_output_tokens == 1200


def test_render_notes_the_cut_and_keeps_the_result_whole() -> None:
    result = {"success": True, "output": FLOOD, "error": "", "stderr": "", "execution_time": 0.2}
    text = render_content("execute_python_code", result, max_tokens=500, model="gpt-4o")
    assert result["output"] == FLOOD  # the host's dict is untouched
    assert "row 0: " in text and "name=item_2999" in text
    assert "to fit 500 tokens" in text and "print less" in text
    assert tokens.count_text_tokens(text, "gpt-4o") <= 500 + 120  # the budget plus status line and notes
    assert render_content("execute_python_code", {**result, "output": "7\n"}, max_tokens=500) == (
        render_content("execute_python_code", {**result, "output": "7\n"})
    )


async def test_through_the_dispatcher_with_a_real_execution(
    make_settings: Callable[..., Settings], sandbox_runtime: object
) -> None:
    settings = make_settings(runtime_dir=sandbox_runtime.root, max_tool_output_tokens=800)  # type: ignore[attr-defined]
    code = (
        "for i in range(20000):\n"
        "    print(f'line {i}: データ {i * i}')\n"
        "raise ValueError('the end of a long run')\n"
    )
    async with CodeInterpreter(settings) as interp:
        ctx = ToolContext(user_id=71, model="gpt-4o")
        r = await ToolDispatcher(interp).dispatch(
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "execute_python_code", "arguments": {"code": code}},
            },
            ctx,
        )
    assert r.is_error
    # The host has everything the executor captured; the model reads a bounded view of it.
    full = r.result["output"]
    assert len(full.encode()) > 90_000 and "line 0: " in full
    assert "line 0: データ 0" in r.content and "ValueError: the end of a long run" in r.content
    assert "tokens" in r.content and "cut here" in r.content
    assert tokens.count_text_tokens(r.content, "gpt-4o") <= 800 + 150
    # What the next request sends is exactly this text.
    assert r.message["content"] == r.content


async def test_the_agent_sends_the_bounded_text_and_estimates_exactly_that(
    make_settings: Callable[..., Settings], sandbox_runtime: object
) -> None:
    import openai

    from code_interpreter.agent import AgentRetry, run_agent
    from openai_server import ScriptedOpenAI, completion, tool_call

    settings = make_settings(runtime_dir=sandbox_runtime.root, max_tool_output_tokens=500)  # type: ignore[attr-defined]
    flood = "for i in range(5000):\n    print('value', i, i * i)\n"
    script = [completion(None, [tool_call("execute_python_code", {"code": flood}, "c1")]), completion("done")]
    async with CodeInterpreter(settings) as interp:
        with ScriptedOpenAI(script) as server:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
            try:
                result = await run_agent(
                    client,
                    "gpt-4o",
                    [{"role": "user", "content": "print a lot"}],
                    ToolContext(user_id=72, model="gpt-4o"),
                    interpreter=interp,
                    retry=AgentRetry(attempts=1),
                )
            finally:
                await client.close()
    sent = server.requests[1]
    [tool_message] = [m for m in sent["messages"] if m["role"] == "tool"]
    assert tool_message["content"] == result.tool_results[0].content
    assert "value 0 0" in tool_message["content"] and "value 4999 24990001" in tool_message["content"]
    assert tokens.count_text_tokens(tool_message["content"], "gpt-4o") <= 500 + 150
    assert "value 2500 " in result.tool_results[0].result["output"]  # the host has all of it
    assert result.requests[1].estimate.input_tokens == tokens.count_request_tokens(
        "gpt-4o", sent["messages"], sent["tools"]
    )


def test_a_cut_that_swallows_the_sandboxs_marker_says_those_bytes_exist_nowhere() -> None:
    """#25: after a 10 MB print the model read "the host has the full text"; the host had 100,000 bytes."""
    from code_interpreter.runtime.streams import Capped

    printed = "".join(f"row {i:07d}\n" for i in range(800_000)).encode()  # 9.6 MB, as the sandbox keeps it
    capped = Capped(100_000)
    capped.add(printed)
    result = {"success": True, "output": capped.text(), "error": "", "stderr": "", "truncated": True}
    text = render_content("execute_python_code", result, max_tokens=300, model="gpt-4o")
    [marker] = [line for line in text.splitlines() if line.startswith("… [")]
    dropped = f"{len(printed) - 100_000:,}"
    assert marker.endswith(
        f"cut here; the application has them, but not the {dropped} bytes dropped in the sandbox] …"
    )
    assert "full text" not in text
    plain = render_content(
        "execute_python_code", {**result, "output": printed[:200_000].decode()}, max_tokens=300
    )
    [marker] = [line for line in plain.splitlines() if line.startswith("… [")]
    assert marker.endswith("cut here; the application has them] …")
