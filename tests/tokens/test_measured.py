"""Prompt-token counts others measured against the OpenAI API and published, reproduced exactly.

Sources (every number below is a ``usage.prompt_tokens`` the API returned, not another counter's
output):

- hmarr/openai-chat-tokens ``tests/token-counts.test.ts`` (gpt-3.5-turbo, 2023): messages,
  ``functions`` definitions, legacy ``function_call`` and ``function`` results.
- pamelafox/openai-messages-token-helper ``tests/functions.py`` (gpt-4, 2024; checked by its
  ``verify_functions.py`` against the API): one tool, the system message "You are a bot.",
  and ``tool_choice`` auto / none / a named function.
- forestwanglin/openai-java issue #5 (gpt-4, January 2024): an assistant ``tool_calls`` message and
  its ``tool`` result, 35 tokens.
- OpenAI community forum, "Strange token cost calculation for tool_calls" (gpt-3.5-turbo,
  December 2023): a user message, one call and its result, 40 tokens.

pamelafox's measurements also hold schemas our rendering (hmarr's, exact on its 2023 vectors
including a nested object) counts 1 to 3 tokens high on gpt-4 in 2024; they are pinned below as
known over-counts, so a budget guard never under-estimates them and a change in either
direction is noticed.
"""

from __future__ import annotations

from typing import Any

import pytest

from code_interpreter import tokens

Msgs = list[dict[str, Any]]


def _fn(name: str, params: dict[str, Any] | None = None, description: str | None = None) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name}
    if description:
        f["description"] = description
    if params is not None:
        f["parameters"] = params
    return {"type": "function", "function": f}


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


EMPTY = {"type": "object", "properties": {}}
HELLO: Msgs = [{"role": "user", "content": "hello"}]
BOT: Msgs = [{"role": "system", "content": "You are a bot."}]

# -- hmarr/openai-chat-tokens (gpt-3.5-turbo) --------------------------------------------------------------

HMARR: list[tuple[str, Msgs, list[dict[str, Any]] | None, int]] = [
    ("user", HELLO, None, 8),
    ("user two words", [{"role": "user", "content": "hello world"}], None, 9),
    ("system", [{"role": "system", "content": "hello"}], None, 8),
    ("system colon", [{"role": "system", "content": "hello:"}], None, 9),
    (
        "three roles",
        [
            {"role": "system", "content": "# Important: you're the best robot"},
            {"role": "user", "content": "hello robot"},
            {"role": "assistant", "content": "hello world"},
        ],
        None,
        27,
    ),
    ("empty function", HELLO, [_fn("foo", EMPTY)], 31),
    ("described function", HELLO, [_fn("foo", EMPTY, "Do a foo")], 36),
    (
        "one property",
        HELLO,
        [_fn("bing_bong", {"type": "object", "properties": {"foo": {"type": "string"}}}, "Do a bing bong")],
        49,
    ),
    (
        "described property",
        HELLO,
        [
            _fn(
                "bing_bong",
                {
                    "type": "object",
                    "properties": {
                        "foo": {"type": "string"},
                        "bar": {"type": "number", "description": "A number"},
                    },
                },
                "Do a bing bong",
            )
        ],
        57,
    ),
    (
        "nested object with an enum",
        HELLO,
        [
            _fn(
                "bing_bong",
                {
                    "type": "object",
                    "properties": {
                        "foo": {
                            "type": "object",
                            "properties": {
                                "bar": {"type": "string", "enum": ["a", "b", "c"]},
                                "baz": {"type": "boolean"},
                            },
                        }
                    },
                },
                "Do a bing bong",
            )
        ],
        68,
    ),
    (
        "function result",
        [
            {"role": "user", "content": "hello world"},
            {"role": "function", "name": "do_stuff", "content": "{}"},
        ],
        None,
        15,
    ),
    (
        "function result with JSON",
        [
            {"role": "user", "content": "hello world"},
            {"role": "function", "name": "do_stuff", "content": '{"foo": "bar", "baz": 1.5}'},
        ],
        None,
        28,
    ),
    (
        "function result alone",
        [{"role": "function", "name": "dance_the_tango", "content": '{"a": { "b" : { "c": false}}}'}],
        None,
        24,
    ),
    (
        "function call",
        [
            {
                "role": "assistant",
                "content": "",
                "function_call": {"name": "do_stuff", "arguments": '{"foo": "bar", "baz": 1.5}'},
            }
        ],
        None,
        26,
    ),
    (
        "function call, other whitespace",
        [
            {
                "role": "assistant",
                "content": "",
                "function_call": {"name": "do_stuff", "arguments": '{"foo":"bar", "baz":\n\n 1.5}'},
            }
        ],
        None,
        25,
    ),
    (
        "system merges with functions",
        [{"role": "system", "content": "Hello"}, {"role": "user", "content": "Hi there"}],
        [_fn("do_stuff", EMPTY)],
        35,
    ),
    (
        "only the first system message is padded",
        [
            {"role": "system", "content": "Hello:"},
            {"role": "system", "content": "Hello"},
            {"role": "user", "content": "Hi there"},
        ],
        [_fn("do_stuff", EMPTY)],
        40,
    ),
    (
        "recipe (arrays of nested objects)",
        HELLO,
        [
            _fn(
                "get_recipe",
                {
                    "type": "object",
                    "required": ["ingredients", "instructions", "time_to_cook"],
                    "properties": {
                        "ingredients": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "unit", "amount"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "unit": {
                                        "enum": ["grams", "ml", "cups", "pieces", "teaspoons"],
                                        "type": "string",
                                    },
                                    "amount": {"type": "number"},
                                },
                            },
                        },
                        "instructions": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Steps to prepare the recipe (no numbering)",
                        },
                        "time_to_cook": {
                            "type": "number",
                            "description": "Total time to prepare the recipe in minutes",
                        },
                    },
                },
            )
        ],
        106,
    ),
]


@pytest.mark.parametrize(("case", "messages", "tools", "expected"), HMARR, ids=[c[0] for c in HMARR])
def test_hmarr_measurements(
    case: str, messages: Msgs, tools: list[dict[str, Any]] | None, expected: int
) -> None:
    assert tokens.count_request_tokens("gpt-3.5-turbo", messages, tools=tools) == expected


# -- pamelafox/openai-messages-token-helper (gpt-4): tools and tool_choice ---------------------------------

SEARCH = "Retrieve sources from the Azure AI Search index"
QUERY = {
    "type": "object",
    "properties": {
        "search_query": {
            "type": "string",
            "description": "Query string to retrieve documents from azure search eg: 'Health care plan'",
        }
    },
    "required": ["search_query"],
}
DEMO = "This is the main function description"
INT_ENUM = {"type": "object", "properties": {"integer_enum": {"type": "integer", "enum": [-1, 1]}}}
ORDER = {
    "type": "object",
    "properties": {
        "product_name": {"type": "string", "description": "Product name ordered by customer"},
        "quantity": {"type": "integer", "description": "Quantity ordered by customer"},
        "unit": {
            "type": "string",
            "enum": ["meals", "days"],
            "description": "unit of measurement of the customer order",
        },
    },
    "required": ["product_name", "quantity", "unit"],
}
ESCALATE = (
    "If user is showing signs of frustration or anger in the query. Also if the user says they want to "
    "talk to a real person and not a chat bot."
)


def _one(name: str, description: str, prop: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    params = {"type": "object", "properties": {prop: schema}, "required": [prop]}
    return [_fn(name, params, description)]


PAMELAFOX: list[tuple[str, list[dict[str, Any]], Any, int]] = [
    ("tool_choice auto", [_fn("search_sources", QUERY, SEARCH)], "auto", 66),
    ("tool_choice none", [_fn("search_sources", QUERY, SEARCH)], "none", 67),
    ("tool_choice names the function", [_fn("search_sources", QUERY, SEARCH)], _named("search_sources"), 75),
    ("no parameters", [_fn("search_sources", None, SEARCH)], "auto", 42),
    ("no parameters, named", [_fn("search_sources", None, SEARCH)], _named("search_sources"), 51),
    ("string enum", [_fn("summarize_order", ORDER, "Summarize the customer order request")], "none", 86),
    (
        "boolean",
        _one(
            "human_escalation",
            "Check if user wants to escalate to a human",
            "requires_escalation",
            {"type": "boolean", "description": ESCALATE},
        ),
        "none",
        89,
    ),
    (
        "array",
        _one(
            "get_coordinates",
            "Get the latitude and longitude of multiple mailing addresses",
            "addresses",
            {
                "type": "array",
                "description": "The mailing addresses to be located",
                "items": {"type": "string"},
            },
        ),
        "none",
        59,
    ),
    (
        "null",
        _one(
            "get_null",
            "Get the null value",
            "null_value",
            {"type": "null", "description": "The null value to be returned"},
        ),
        "none",
        55,
    ),
    (
        "no type",
        _one(
            "get_no_type",
            "Get the no type value",
            "no_type_value",
            {"description": "The no type value to be returned"},
        ),
        "none",
        59,
    ),
]


@pytest.mark.parametrize(
    ("case", "tools", "tool_choice", "expected"), PAMELAFOX, ids=[c[0] for c in PAMELAFOX]
)
def test_pamelafox_measurements(
    case: str, tools: list[dict[str, Any]], tool_choice: Any, expected: int
) -> None:
    assert tokens.count_request_tokens("gpt-4", BOT, tools=tools, tool_choice=tool_choice) == expected


def test_a_named_tool_choice_costs_its_name_and_seven() -> None:
    """Regression (#15): the counter said 72 for the API's 75 (it added the name + 4, hmarr's legacy rule)."""
    auto = tokens.count_request_tokens("gpt-4", BOT, tools=PAMELAFOX[0][1], tool_choice="auto")
    named = tokens.count_request_tokens(
        "gpt-4", BOT, tools=PAMELAFOX[0][1], tool_choice=_named("search_sources")
    )
    assert named - auto == tokens.count_text_tokens("search_sources", "gpt-4") + 7 == 9


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    inner = {"type": "object", "description": "The object data type as a property", "properties": properties}
    return {"type": "object", "properties": {"object_1": inner}, "required": ["object_1"]}


HAPPY = {"type": "string", "enum": ["Happy", "Sad"]}
LOST = {"type": "string", "description": "Description in a second object is lost"}
# (case, tools, tool_choice, the API's count, how many tokens over it we count)
KNOWN_OVER: list[tuple[str, list[dict[str, Any]], Any, int, int]] = [
    ("integer enum, no description", [_fn("data_demonstration", INT_ENUM, DEMO)], "none", 54, 1),
    ("integer enum, named", [_fn("data_demonstration", INT_ENUM, DEMO)], _named("data_demonstration"), 64, 1),
    (
        "property without a description",
        [
            _fn(
                "search_sources",
                {"type": "object", "properties": {"search_query": {"type": "string"}}},
                SEARCH,
            )
        ],
        "auto",
        49,
        1,
    ),
    (
        "nested object",
        [_fn("data_demonstration", _object({"string1": {"type": "string"}}), DEMO)],
        "none",
        65,
        2,
    ),
    ("nested enum", [_fn("data_demonstration", _object({"string_2a": HAPPY}), DEMO)], "none", 73, 1),
    (
        "nested enum and string",
        [_fn("data_demonstration", _object({"string_2a": HAPPY, "string_2b": LOST}), DEMO)],
        "none",
        89,
        3,
    ),
]


@pytest.mark.parametrize(
    ("case", "tools", "tool_choice", "api", "over"), KNOWN_OVER, ids=[c[0] for c in KNOWN_OVER]
)
def test_schemas_we_count_high_on_gpt4(
    case: str, tools: list[dict[str, Any]], tool_choice: Any, api: int, over: int
) -> None:
    """Derived, not exact: the gpt-4 of 2024 renders these schemas shorter than the 2023 rule we follow."""
    assert tokens.count_request_tokens("gpt-4", BOT, tools=tools, tool_choice=tool_choice) == api + over


# -- tool calls and tool results -----------------------------------------------------------------------


ISSUE_5: Msgs = [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_Id8ycVMsW8gdsf7kSXfgAcf1",
                "type": "function",
                "function": {"name": "get_current_weather", "arguments": '{\n  "location": "Boston, MA"\n}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_Id8ycVMsW8gdsf7kSXfgAcf1",
        "name": "get_current_weather",
        "content": "29 degree celcius",
    },
]
FORUM: Msgs = [
    {"role": "user", "content": [{"type": "text", "text": "How much is 2 plus 2?"}]},
    {
        "role": "assistant",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "calculator", "arguments": '{"a":2, "b":2}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "a", "content": "4"},
]


@pytest.mark.parametrize(
    ("model", "messages", "expected"), [("gpt-4", ISSUE_5, 35), ("gpt-3.5-turbo", FORUM, 40)]
)
def test_tool_call_and_result_measurements(model: str, messages: Msgs, expected: int) -> None:
    assert tokens.count_request_tokens(model, messages) == expected


def test_a_result_is_authored_by_the_function_its_call_named() -> None:
    """The forum's tool message has no ``name``: its author is ``calculator``, found by its call id."""
    with_name = [*FORUM[:2], {**FORUM[2], "name": "calculator"}]
    assert tokens.count_request_tokens("gpt-3.5-turbo", with_name) == 40
    # A call's header tokenizes as one string: ".cal" + "culator", not "." + "calculator".
    assert tokens.count_text_tokens("assistant to=functions.calculator", "gpt-3.5-turbo") == 6


async def test_parallel_calls_are_counted_with_a_warning() -> None:
    """The API wraps parallel calls in an unpublished form: counted one by one, and said so."""
    two = {**FORUM[1], "tool_calls": [FORUM[1]["tool_calls"][0], {**FORUM[1]["tool_calls"][0], "id": "b"}]}
    messages = [FORUM[0], two, FORUM[2], {**FORUM[2], "tool_call_id": "b"}]
    counter = tokens.TokenCounter(image_hosts=(), prices_file=None)
    est = await counter.estimate("gpt-3.5-turbo", messages)
    assert est.input_tokens == 40 + 19 + 5  # one more call (3 + 6 + 10) and one more result (3 + 1 + 1)
    assert any("parallel tool calls" in w for w in est.warnings)
    single = await counter.estimate("gpt-3.5-turbo", FORUM)
    assert not any("parallel" in w for w in single.warnings)
