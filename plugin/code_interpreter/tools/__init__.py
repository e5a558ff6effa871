"""The model-facing tool: the canonical schema and its renderings, the dispatcher, the result text.

- :mod:`.schema` — ``tool_schemas/execute_python_code.json`` loaded, rendered for Chat Completions
  and Responses, and the argument validation derived from it;
- :mod:`.dispatch` — :class:`ToolDispatcher` with the host's trusted :class:`ToolContext`, and
  :class:`ToolResult`;
- :mod:`.render` — what the model reads of a result: compact text, and image parts for vision models
  (Chat Completions and Responses forms);
- :mod:`.trim` — that text's output and errors fitted into ``Settings.max_tool_output_tokens``.
"""

from __future__ import annotations

from .dispatch import ToolContext, ToolDispatcher, ToolResult
from .render import images_message, supports_vision
from .schema import EXECUTE_TOOL, load_schema, tool_definitions

__all__ = [
    "EXECUTE_TOOL",
    "ToolContext",
    "ToolDispatcher",
    "ToolResult",
    "images_message",
    "load_schema",
    "supports_vision",
    "tool_definitions",
]
