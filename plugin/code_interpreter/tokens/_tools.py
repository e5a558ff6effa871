"""Tool (function) definitions as the model sees them: a TypeScript-like ``namespace functions``.

OpenAI renders JSON-schema function definitions into TypeScript type declarations inside the
system prompt. The rendering and the constants below follow hmarr/openai-chat-tokens (MIT), whose
rules were found by probing the API and which reproduces the OpenAI cookbook's published vectors
exactly (105 prompt tokens on cl100k models, 101 on o200k models): definitions + 9 tokens, 4
fewer when the request already has a system message (the definitions join it), ``tool_choice``
"none" +1. A named function costs its name's tokens + 7: the API's counts for ``tool_choice``
naming a function (pamelafox/openai-messages-token-helper's measurements on gpt-4: one tool
``search_sources`` and the system message "You are a bot." is 75 prompt tokens, 9 more than with
"auto"; also adopted by litellm) — hmarr's + 4 was for the legacy ``function_call``, whose
measurement predates the tools API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ._encoding import encoding_for_model
from ._text import encoded_len

__all__ = [
    "FUNCTIONS_OVERHEAD",
    "NAMED_CHOICE_OVERHEAD",
    "SYSTEM_MERGE_SAVING",
    "count_tool_tokens",
    "function_definitions",
    "render_functions",
    "tool_choice_tokens",
]

FUNCTIONS_OVERHEAD = 9
SYSTEM_MERGE_SAVING = 4
NAMED_CHOICE_OVERHEAD = 7


def function_definitions(tools: Any, warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """Normalize Chat (``{"type": "function", "function": {...}}``), Responses and legacy definitions."""
    if tools is None:
        return []
    if isinstance(tools, (Mapping, str | bytes)) or not isinstance(tools, Iterable):
        raise ValueError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if hasattr(tool, "model_dump"):
            tool = tool.model_dump(exclude_none=True)
        if not isinstance(tool, Mapping):
            raise ValueError(f"tools[{i}] must be a mapping, got {type(tool).__name__}")
        kind = tool.get("type", "function")
        if kind != "function":
            # Built-in tools (web_search, file_search …) are billed by OpenAI's own rules, not counted here.
            if warnings is not None:
                warnings.append(f"tools[{i}]: built-in tool type {kind!r} is not counted")
            continue
        fn = tool.get("function", tool)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(
                f"tools[{i}] has no function name; expected {{'type': 'function', 'function': {{'name': …}}}}"
            )
        params = fn.get("parameters") or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"tools[{i}].parameters must be a JSON-schema object")
        out.append({"name": fn["name"], "description": fn.get("description") or "", "parameters": params})
    return out


def _format_type(schema: Any, indent: int) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    if "enum" in schema and isinstance(schema["enum"], list):
        return " | ".join(json.dumps(v) if isinstance(v, str) else str(v) for v in schema["enum"])
    for combo in ("anyOf", "oneOf"):
        if isinstance(schema.get(combo), list):
            return " | ".join(_format_type(s, indent) for s in schema[combo])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_format_type({**schema, "type": k}, indent) for k in kind)
    if kind in ("string", "boolean", "null", "number"):
        return str(kind)
    if kind == "integer":
        return "number"
    if kind == "object":
        if not schema.get("properties"):
            return "object"
        return "\n".join(["{", _format_properties(schema, indent + 2), "}"])
    if kind == "array":
        items = schema.get("items")
        return f"{_format_type(items, indent)}[]" if items else "any[]"
    return "any"


def _format_properties(schema: Mapping[str, Any], indent: int) -> str:
    required = schema.get("required") or []
    lines = []
    props = schema.get("properties") or {}
    if not isinstance(props, Mapping):
        return ""
    for name, prop in props.items():
        if isinstance(prop, Mapping) and prop.get("description"):
            lines.append(f"// {prop['description']}")
        mark = "" if name in required else "?"
        lines.append(f"{name}{mark}: {_format_type(prop, indent)},")
    return "\n".join(" " * indent + line for line in lines)


def render_functions(functions: list[dict[str, Any]]) -> str:
    """The TypeScript-like block the model reads for ``functions`` (normalized definitions)."""
    lines = ["namespace functions {", ""]
    for f in functions:
        if f["description"]:
            lines.append(f"// {f['description']}")
        if f["parameters"].get("properties"):
            lines.append(f"type {f['name']} = (_: {{")
            lines.append(_format_properties(f["parameters"], 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {f['name']} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def tool_choice_tokens(tool_choice: Any, encoding: str) -> int:
    """Extra tokens for ``tool_choice``: auto/required 0, none 1, a named function its name + 7."""
    if tool_choice is None or tool_choice in ("auto", "required"):
        return 0
    if tool_choice == "none":
        return 1
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function", tool_choice)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if isinstance(name, str) and name:
            return encoded_len(encoding, name) + NAMED_CHOICE_OVERHEAD
    raise ValueError(
        "tool_choice must be 'auto', 'none', 'required' or "
        f"{{'type': 'function', 'function': {{'name': …}}}}, got {tool_choice!r}"
    )


def tools_tokens(functions: list[dict[str, Any]], encoding: str, tool_choice: Any = None) -> int:
    """Tokens of normalized definitions plus tool_choice, before the system-message saving."""
    if not functions:
        return 0
    return (
        encoded_len(encoding, render_functions(functions))
        + FUNCTIONS_OVERHEAD
        + tool_choice_tokens(tool_choice, encoding)
    )


def count_tool_tokens(tools: Any, model: str, tool_choice: Any = None) -> int:
    """Prompt tokens the tool definitions add to a request without a system message (4 fewer with one)."""
    encoding = encoding_for_model(model).name
    return tools_tokens(function_definitions(tools), encoding, tool_choice)
