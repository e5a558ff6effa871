"""The canonical tool schema: loading, the OpenAI renderings, and argument validation derived from it.

``tool_schemas/execute_python_code.json`` is the single source of truth. It is written for OpenAI
*strict mode* (structured outputs): every property is listed in ``required`` and the optional ones
(``timeout``, ``install_packages``) are nullable, so a strict model always sends all three keys,
using ``null`` for "not given". Providers without strict mode may omit the optional keys; the
validator treats an omitted nullable key exactly like ``null`` before checking the same schema, so
both kinds of caller are accepted and everything else (types, ranges, extra keys) is checked
against the one schema.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

import jsonschema
from jsonschema import Draft202012Validator

__all__ = [
    "EXECUTE_TOOL",
    "SCHEMA_NAMES",
    "describe_state",
    "describe_versions",
    "load_schema",
    "nullable_optionals",
    "tool_definitions",
    "validate_arguments",
]

EXECUTE_TOOL = "execute_python_code"
SCHEMA_NAMES = (EXECUTE_TOOL,)

Api = Literal["chat", "responses"]


@functools.cache
def _load(name: str) -> dict[str, Any]:
    ref = resources.files("code_interpreter").joinpath("tool_schemas", f"{name}.json")
    data: dict[str, Any] = json.loads(ref.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(data["parameters"])
    return data


def load_schema(name: str = EXECUTE_TOOL) -> dict[str, Any]:
    """Return a fresh copy of a canonical tool definition ({name, description, parameters, strict})."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown tool schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return copy.deepcopy(_load(name))


def tool_definitions(
    api: Api = "chat", *, sessions: bool = False, versions: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Render the tools for the OpenAI Chat Completions (``"chat"``) or Responses (``"responses"``) API.

    ``sessions=True`` when the host runs the calls of a conversation in one session
    (``ToolContext.session_id``): the description then tells the model that state persists.
    ``versions`` (``{"python", "pandas", "numpy"}``, as ``PackageManager.runtime_versions()`` gives
    them) are named in the description; without them it says "current releases".
    """
    out: list[dict[str, Any]] = []
    for name in SCHEMA_NAMES:
        d = load_schema(name)
        d["description"] = describe_state(d, sessions=sessions, versions=versions)
        if api == "chat":
            out.append(
                {
                    "type": "function",
                    "function": {
                        "name": d["name"],
                        "description": d["description"],
                        "parameters": d["parameters"],
                        "strict": d["strict"],
                    },
                }
            )
        elif api == "responses":
            out.append(
                {
                    "type": "function",
                    "name": d["name"],
                    "description": d["description"],
                    "parameters": d["parameters"],
                    "strict": d["strict"],
                }
            )
        else:
            raise ValueError(f"api must be 'chat' or 'responses', got {api!r}")
    return out


def describe_state(
    definition: dict[str, Any], *, sessions: bool, versions: Mapping[str, str] | None = None
) -> str:
    """The tool's description with the truth about state in this mode (one-shot or session), and the
    Python, pandas and numpy versions the code runs on (``versions``; "current releases" without them)."""
    notes = definition.get("state_notes") or {}
    one_shot, session = notes.get("one_shot", ""), notes.get("session", "")
    text = str(definition["description"])
    if sessions and one_shot and session:
        text = text.replace(one_shot, session)
    line = describe_versions(definition, versions)
    return f"{text}\n{line}" if line else text


def describe_versions(definition: dict[str, Any], versions: Mapping[str, str] | None) -> str:
    """The description's line on versions: the runtime's, and the removals code for older ones trips on."""
    notes = definition.get("version_notes") or {}
    if not notes:
        return ""
    named = [f"{label} {versions[key]}" for key, label in _VERSIONED if versions and versions.get(key)]
    if named:
        listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
        line = str(notes["known"]).format(versions=listed)
    else:
        line = str(notes["unknown"])
    removals = [str(notes[key]) for key in ("pandas", "numpy") if key in notes and _major(versions, key) >= 2]
    return f"{line} {'; '.join(removals)}." if removals else line


_VERSIONED = (("python", "Python"), ("pandas", "pandas"), ("numpy", "numpy"))


def _major(versions: Mapping[str, str] | None, key: str) -> int:
    """The major version of ``key`` in ``versions``; unknown counts as current (2 or later)."""
    text = (versions or {}).get(key) or ""
    head = text.split(".", 1)[0]
    return int(head) if head.isdigit() else 2


def nullable_optionals(parameters: dict[str, Any]) -> set[str]:
    """Names of properties whose type admits null: strict mode's way of saying "optional"."""
    out = set()
    for key, prop in parameters.get("properties", {}).items():
        t = prop.get("type")
        if t == "null" or (isinstance(t, list) and "null" in t):
            out.add(key)
    return out


MAX_PROBLEMS = 5
"""Most validation problems listed in one refusal."""
MAX_ECHOED = 5
"""Most unexpected argument names echoed back."""


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(_load(name)["parameters"])


def _describe(err: jsonschema.ValidationError, props: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = ", ".join(props)
        extra = sorted(set(err.instance) - set(props)) if isinstance(err.instance, dict) else []
        # Echo a few short names only: the model may send thousands of keys or huge ones.
        names = ", ".join(repr(k) if len(k) <= 60 else repr(k[:57] + "...") for k in extra[:MAX_ECHOED])
        if len(extra) > MAX_ECHOED:
            names += f" and {len(extra) - MAX_ECHOED} more"
        return (
            f"unexpected argument(s) {names}: this tool accepts only {allowed}. "
            "The user and their files are set by the application, not by tool arguments"
        )
    if err.validator == "required":
        return f"missing argument: {err.message.split(' is a required')[0]}"
    if err.validator == "type":
        wanted = err.validator_value
        wanted_s = " or ".join(wanted) if isinstance(wanted, list) else str(wanted)
        got = _json_type(err.instance)
        return f"argument '{where}' must be {wanted_s}, got {got} ({_short(err.instance)})"
    if err.validator in ("minimum", "maximum"):
        lo, hi = err.schema.get("minimum"), err.schema.get("maximum")
        return f"argument '{where}' must be between {lo} and {hi}, got {_short(err.instance)}"
    return f"argument '{where or '(root)'}': {err.message}"


def _json_type(v: Any) -> str:
    """The JSON name of a value's type, as the model wrote it."""
    if v is None:
        return "null"
    for py, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(v, py):
            return name
    return "array" if isinstance(v, list) else "object" if isinstance(v, dict) else type(v).__name__


def _short(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def validate_arguments(name: str, args: Any) -> tuple[dict[str, Any], list[str]]:
    """Check tool arguments against the canonical schema.

    Returns (normalized arguments with omitted nullable keys set to None, problems); an empty
    problem list means the arguments are valid.
    """
    schema = _load(name)["parameters"]
    props: dict[str, Any] = schema.get("properties", {})
    if not isinstance(args, dict):
        return {}, [f"the arguments must be a JSON object, got {_json_type(args)}"]
    normalized = dict(args)
    for key in nullable_optionals(schema):
        normalized.setdefault(key, None)
    errors = sorted(
        _validator(name).iter_errors(normalized), key=lambda e: (list(e.absolute_path), e.validator)
    )
    problems: list[str] = []
    for err in errors:
        msg = _describe(err, props)
        if msg not in problems:
            problems.append(msg)
    if len(problems) > MAX_PROBLEMS:
        # A refusal the model can read: the first few problems, not one line per bad array item.
        more = f"… and {len(problems) - MAX_PROBLEMS} more problems of the same kind"
        problems = [*problems[:MAX_PROBLEMS], more]
    return normalized, problems
