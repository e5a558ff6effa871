"""code_interpreter: a safe, fast ``execute_python_code`` tool for LLM agents.

import code_interpreter as ci
async with ci.CodeInterpreter() as interp:
    result = await interp.execute("print(1 + 1)", user_id=42)          # the seed's dict
    typed = await interp.run(ci.ExecutionRequest.build(interp.settings, "print(2)", user_id=42))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import tokens
from .compat import (
    aclose_default_interpreters,
    cleanup_expired_files,
    delete_user_file,
    execute_code,
    get_file_manager,
    get_interpreter_status,
    get_package_manager,
    list_user_files,
    upload_file,
)
from .errors import (
    BudgetExceeded,
    CodeInterpreterError,
    ConfigurationError,
    ExecutionFailed,
    FileNotFound,
    FileTooLarge,
    IsolationUnavailable,
    PackageInstallError,
    PackageNotApproved,
    PolicyViolation,
    QuotaExceeded,
    SandboxCrashed,
    SandboxError,
    SandboxTimeout,
    StorageUnavailable,
    ToolArgumentError,
)
from .executor import ExecutionEvent, ExecutionResult
from .files import FileManager
from .interpreter import CodeInterpreter
from .packages import PackageManager
from .request import ExecutionRequest
from .settings import Settings
from .tools import ToolContext, ToolDispatcher, ToolResult, tool_definitions

__version__ = "0.1.0"

__all__ = [
    "AgentResult",
    "BudgetExceeded",
    "CodeInterpreter",
    "CodeInterpreterError",
    "ConfigurationError",
    "ExecutionEvent",
    "ExecutionFailed",
    "ExecutionRequest",
    "ExecutionResult",
    "FileManager",
    "FileNotFound",
    "FileTooLarge",
    "IsolationUnavailable",
    "PackageInstallError",
    "PackageManager",
    "PackageNotApproved",
    "PolicyViolation",
    "QuotaExceeded",
    "SandboxCrashed",
    "SandboxError",
    "SandboxTimeout",
    "Settings",
    "StorageUnavailable",
    "ToolArgumentError",
    "ToolContext",
    "ToolDispatcher",
    "ToolResult",
    "aclose_default_interpreters",
    "cleanup_expired_files",
    "delete_user_file",
    "execute_code",
    "get_file_manager",
    "get_interpreter_status",
    "get_package_manager",
    "list_user_files",
    "run_agent",
    "tokens",
    "tool_definitions",
    "upload_file",
]

if TYPE_CHECKING:
    from .agent import AgentResult, run_agent


def __getattr__(name: str) -> Any:
    # The agent loop needs the openai SDK (~1 s to import here); only its users pay for it.
    if name in ("AgentResult", "run_agent"):
        from . import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'code_interpreter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
