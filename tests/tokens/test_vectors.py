"""The OpenAI cookbook's published prompt-token vectors, exact (How_to_count_tokens_with_tiktoken.ipynb)."""

from __future__ import annotations

from typing import Any

import pytest

from code_interpreter import tokens

# Section 6 of the notebook: the API reported 129 prompt tokens on cl100k models and 124 on o200k ones.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

# Section 7: with this tool the API reported 105 (gpt-3.5-turbo, gpt-4) and 101 (gpt-4o, gpt-4o-mini).
COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("openai/gpt-4o", 124),  # GitHub Models' provider prefix
        ("gpt-4o-2024-08-06", 124),
    ],
)
def test_cookbook_messages(model: str, expected: int) -> None:
    assert tokens.count_message_tokens(COOKBOOK_MESSAGES, model) == expected
    assert tokens.count_request_tokens(model, COOKBOOK_MESSAGES) == expected


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)]
)
def test_cookbook_tools(model: str, expected: int) -> None:
    assert tokens.count_request_tokens(model, COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS) == expected
    # The parts add up: the definitions join the system message, which saves 4 tokens.
    parts = tokens.count_message_tokens(COOKBOOK_TOOL_MESSAGES, model) + tokens.count_tool_tokens(
        COOKBOOK_TOOLS, model
    )
    assert parts - 4 == expected


async def test_estimate_matches_vectors() -> None:
    counter = tokens.TokenCounter(image_hosts=(), prices_file=None)
    est = await counter.estimate("gpt-4o", COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    assert est.input_tokens == 101
    assert est.text_tokens + est.tool_tokens == 101
    assert est.image_tokens == 0
    assert est.warnings == ()


def test_text_tokens() -> None:
    # The notebook's first example: "tiktoken is great!" is 6 tokens in cl100k_base.
    assert tokens.count_text_tokens("tiktoken is great!", "gpt-4") == 6
    # Special-token text in user content is ordinary text, never a tiktoken ValueError.
    assert tokens.count_text_tokens("<|endoftext|>", "gpt-4o") > 1
    assert tokens.count_text_tokens("", "gpt-4o") == 0
    with pytest.raises(ValueError, match="str"):
        tokens.count_text_tokens(b"bytes", "gpt-4o")  # type: ignore[arg-type]


def test_tool_choice_and_shapes() -> None:
    base = tokens.count_tool_tokens(COOKBOOK_TOOLS, "gpt-4o")
    assert tokens.count_tool_tokens(COOKBOOK_TOOLS, "gpt-4o", "auto") == base
    assert tokens.count_tool_tokens(COOKBOOK_TOOLS, "gpt-4o", "none") == base + 1
    named = {"type": "function", "function": {"name": "get_current_weather"}}
    name_tokens = tokens.count_text_tokens("get_current_weather", "gpt-4o")
    assert tokens.count_tool_tokens(COOKBOOK_TOOLS, "gpt-4o", named) == base + name_tokens + 7
    # The Responses API's flat definition counts the same as the Chat one.
    flat = [{"type": "function", **COOKBOOK_TOOLS[0]["function"]}]
    assert tokens.count_tool_tokens(flat, "gpt-4o") == base
    assert tokens.count_tool_tokens([], "gpt-4o") == 0
    with pytest.raises(ValueError, match="tool_choice"):
        tokens.count_tool_tokens(COOKBOOK_TOOLS, "gpt-4o", "sometimes")
    with pytest.raises(ValueError, match="function name"):
        tokens.count_tool_tokens([{"type": "function", "function": {}}], "gpt-4o")


def test_nested_tool_schemas_count_their_parts() -> None:
    def tool(props: dict) -> list[dict]:
        return [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": props}},
            }
        ]

    flat = tokens.count_tool_tokens(tool({"a": {"type": "string"}}), "gpt-4o")
    nested = tokens.count_tool_tokens(
        tool({"a": {"type": "object", "properties": {"b": {"type": "array", "items": {"type": "integer"}}}}}),
        "gpt-4o",
    )
    enum = tokens.count_tool_tokens(tool({"a": {"type": "string", "enum": ["x", "y", "z"]}}), "gpt-4o")
    assert nested > flat and enum > flat


def test_tool_calls_and_responses_items_are_counted() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "run", "arguments": '{"code": "print(1)"}'}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": "1\n"}
    chat = tokens.count_message_tokens([{"role": "user", "content": "hi"}, call, result], "gpt-4o")
    assert chat > tokens.count_message_tokens([{"role": "user", "content": "hi"}], "gpt-4o")
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "run", "arguments": '{"code": "print(1)"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "1\n"},
    ]
    assert tokens.count_message_tokens(items, "gpt-4o") == chat
    # Responses' input="…" is one user message.
    assert tokens.count_message_tokens("hi", "gpt-4o") == tokens.count_message_tokens(
        [{"role": "user", "content": "hi"}], "gpt-4o"
    )


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (42, "list of messages"),
        ({"role": "user", "content": "x"}, "list of messages"),
        ([["user", "x"]], "mapping"),
        ([{"content": "no role"}], "role"),
    ],
)
def test_wrong_message_shapes_raise_value_error(messages: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tokens.count_message_tokens(messages, "gpt-4o")
