"""smolagents: :class:`SandboxExecutor`, a ``CodeAgent`` executor whose every code step runs in the sandbox.

Needs the optional extra: ``pip install 'code-interpreter[smolagents]'``.

``CodeAgent(tools=[...], model=..., executor=SandboxExecutor(interp, user_id=42))``: the agent's
code steps run one after another in one live session of the user (variables, imports and files
persist from step to step), in the OS sandbox — not in smolagents' AST interpreter. The executor is
smolagents' own remote-executor kind (:class:`~smolagents.remote_executors.RemotePythonExecutor`),
so the framework's mechanics hold as for its E2B and Docker executors:

- ``final_answer(x)`` is the agent's ``FinalAnswerTool``, patched the framework's way to raise
  ``FinalAnswerException`` with ``x`` serialised as safe JSON; the step ends there and the agent gets
  ``x`` back (no pickle crosses the sandbox wall);
- a failing step raises :class:`~smolagents.utils.AgentError` whose text is the printed output and
  the traceback, which smolagents shows the model for its next step;
- the run's ``additional_args`` are sent in with smolagents' safe serialiser.

**Tools.** A tool whose class can be rebuilt from its source (what smolagents' own ``Tool.to_dict``
checks: class attributes only, an ``__init__`` without required arguments, self-contained
methods — ``@tool`` functions included) is defined inside the sandbox and runs there, with no
network and only the user's files. Anything else — a tool holding host state (a client, a key, an
``__init__`` that needs arguments), a managed agent, a tool whose definition fails in the sandbox —
is a *host object*: it cannot cross the wall, so inside it is a stub that raises with a message
saying so (the model reads it in the step's error), and :attr:`SandboxExecutor.refused_tools`
says which and why.

smolagents is synchronous: each step waits on the interpreter's event loop (see :mod:`._loop`).
An interpreter not started yet is started on a background loop of the executor's own;
:meth:`SandboxExecutor.cleanup` (``CodeAgent.cleanup()``, or leaving ``with CodeAgent(...)``)
ends the session it made and closes that loop.
"""

from __future__ import annotations

import re
import textwrap
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from smolagents.local_python_executor import CodeOutput
    from smolagents.monitoring import AgentLogger, LogLevel
    from smolagents.remote_executors import RemotePythonExecutor
    from smolagents.tool_validation import validate_tool_attributes
    from smolagents.tools import Tool, get_tools_definition_code
    from smolagents.utils import AgentError, instance_to_source
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "code_interpreter.integrations.smolagents needs smolagents: "
        "pip install 'code-interpreter[smolagents]'"
    ) from exc

from ._loop import call, close_private

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["SandboxExecutor"]

# The last line of the traceback of the patched final_answer: "<qualname>.FinalAnswerException: safe:{...}".
_FINAL = re.compile(r"(?:^|[.\s])FinalAnswerException: ((?:safe|pickle):.*)\Z")
_SYNC_HINT = "run the agent in a worker thread there, e.g. await asyncio.to_thread(agent.run, task)"
_STUB = '''
class _HostOnlyTool:
    """A tool that exists on the host only: calling it explains why it cannot run here."""

    def __init__(self, name, reason):
        self.name, self.reason = name, reason

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"the tool {self.name!r} cannot run in this sandbox: {self.reason}. "
            "Solve the task without it, with the other tools and plain Python."
        )
'''


def _summary(exc: BaseException) -> str:
    """An exception's message on one line (smolagents lists validation problems as "- ..." lines)."""
    lines = [line.strip().removeprefix("- ") for line in str(exc).splitlines() if line.strip()]
    return textwrap.shorten(" ".join(lines) or type(exc).__name__, 400)


def _why_not_portable(tool: Any) -> str | None:
    """Why ``tool`` cannot be rebuilt inside the sandbox, or None when it can."""
    if not isinstance(tool, Tool):
        return f"it is a host object ({type(tool).__name__}, e.g. a managed agent with its own model)"
    try:
        validate_tool_attributes(tool.__class__, check_imports=False)
        tool.to_dict()
        instance_to_source(tool, base_cls=Tool)
    except Exception as exc:
        return f"it is a host object whose code cannot be sent into the sandbox ({_summary(exc)})"
    return None


class SandboxExecutor(RemotePythonExecutor):
    """A smolagents ``CodeAgent`` executor: every code step is a cell of one sandboxed session.

    Args:
        interp: the CodeInterpreter the code runs on (started or not).
        user_id: whose files and quotas apply (from the host; the model's code cannot change it).
        session_id: the conversation's session (kept across runs, saved when idle); default: a new
            session of this executor's own, ended by :meth:`cleanup`.
        user_files: file ids the code may read (in the working directory under their names, and via
            ``load_file``); None: all of the user's stored files.
        timeout: wall-clock seconds per step (default: the interpreter's ``default_timeout``).
        logger: smolagents' logger for the executor's own messages (default: silent).
    """

    def __init__(
        self,
        interp: CodeInterpreter,
        user_id: int | str,
        session_id: str | None = None,
        *,
        user_files: Sequence[str] | None = None,
        timeout: float | None = None,
        logger: AgentLogger | None = None,
    ) -> None:
        super().__init__([], logger or AgentLogger(level=LogLevel.OFF), allow_pickle=False)
        self.interp = interp
        self.user_id = user_id
        self.owns_session = session_id is None
        self.session_id = session_id or f"smolagents-{uuid.uuid4().hex}"
        self.user_files = None if user_files is None else list(user_files)
        self.timeout = timeout
        self.refused_tools: dict[str, str] = {}
        """Tools that stay outside the sandbox (name → why); inside, calling one raises saying so."""
        self._tools: dict[str, Any] = {}
        self._variables: dict[str, Any] = {}
        self._lost = False

    # -- one step ------------------------------------------------------------------------------------
    def run_code_raise_errors(self, code: str) -> CodeOutput:
        """Run ``code`` as the session's next cell; its final answer, or AgentError with the traceback."""
        notes: list[str] = []
        if self._lost:  # the session restarted empty: put the tools and variables back first
            self._lost = False
            notes.append("the sandbox session restarted: variables from earlier steps are gone")
            self.send_tools(self._tools)
            self.send_variables(self._variables)
        result = self._execute(code)
        logs = self._logs(result, notes)
        error = str(result.get("error") or "")
        if not result.get("success"):
            found = _FINAL.search(error.rstrip())
            if found:
                try:
                    value = self._deserialize_final_answer(found.group(1), allow_pickle=False)
                except Exception as exc:
                    problem = f"{logs}\nThe final answer could not be read: {exc}"
                    raise AgentError(problem, self.logger) from None
                return CodeOutput(output=value, logs=logs, is_final_answer=True)
            if "FinalAnswerException" in error and result.get("truncated"):
                raise AgentError(
                    f"{logs}\nThe final answer is too large to return (the output is limited to "
                    f"{self.interp.settings.max_output_bytes:,} bytes): return a shorter answer, such as a "
                    "summary, or write the full result to a file",
                    self.logger,
                )
            raise AgentError(f"{logs}\nExecuting code yielded an error:\n{error}", self.logger)
        return CodeOutput(output=None, logs=logs, is_final_answer=False)

    def _execute(self, code: str) -> dict[str, Any]:
        result = call(self.interp, lambda: self._aexecute(code), what="SandboxExecutor", hint=_SYNC_HINT)
        state = (result.get("session") or {}).get("state")
        cell = (result.get("session") or {}).get("cell")
        if state == "restarted" or (state == "new" and isinstance(cell, int) and cell > 1):
            self._lost = True
        return result

    async def _aexecute(self, code: str) -> dict[str, Any]:
        await self.interp.start()
        files = self.user_files
        if files is None:
            files = [str(f["file_id"]) for f in await self.interp.files.list_user_files(self.user_id)]
        return await self.interp.execute(
            code, user_id=self.user_id, user_files=files, timeout=self.timeout, session_id=self.session_id
        )

    @staticmethod
    def _logs(result: dict[str, Any], notes: list[str]) -> str:
        """What the step printed, then its warnings, generated files and notes."""
        parts = [str(result.get("output") or "")]
        stderr = str(result.get("stderr") or "")
        if result.get("success") and stderr.strip():
            parts.append(f"Stderr:\n{stderr}")
        files = result.get("generated_files") or []
        if files:
            names = ", ".join(f"{f.get('filename')} (file_id {f.get('file_id')})" for f in files)
            parts.append(f"Generated files (sent to the user): {names}\n")
        notes = [*notes, *(str(n) for n in result.get("notes") or () if n)]
        if result.get("truncated"):
            notes.append("the output was truncated (head and tail kept): print less")
        if notes:
            parts.append("Notes:\n" + "".join(f"- {n}\n" for n in notes))
        return "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts)

    # -- what the agent sends in ---------------------------------------------------------------------
    def send_tools(self, tools: dict[str, Any]) -> None:
        """Define the agent's tools inside the session; host objects become stubs that explain themselves."""
        self._tools = dict(tools)
        final = tools.get("final_answer")
        if isinstance(final, Tool) and not hasattr(
            type(final), "_forward"
        ):  # patched once, the framework's way
            self._patch_final_answer_with_exception(final)
        self.refused_tools = {}
        for name, tool in tools.items():
            reason = _why_not_portable(tool)
            if reason is None:
                defined = self._define(name, get_tools_definition_code({name: tool}))
                if defined is None:
                    continue
                reason = f"its definition failed inside the sandbox ({defined})"
            self.refused_tools[name] = reason
        if self.refused_tools:
            stubs = [_STUB] + [f"{n} = _HostOnlyTool({n!r}, {r!r})" for n, r in self.refused_tools.items()]
            self.run_code_raise_errors("\n".join(stubs))
            for name, reason in self.refused_tools.items():
                self.logger.log(f"Tool {name!r} stays outside the sandbox: {reason}", level=LogLevel.INFO)

    def _define(self, name: str, code: str) -> str | None:
        """Run one tool's definition cell; None when it worked, else the last line of its error."""
        try:
            self.run_code_raise_errors(code)
        except AgentError as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            return textwrap.shorten(lines[-1] if lines else "unknown error", 300)
        return None

    def send_variables(self, variables: dict[str, Any]) -> None:
        """Send the run's ``additional_args`` in (safe JSON only; kept to send again after a restart)."""
        self._variables = dict(variables)
        super().send_variables(variables)

    def install_packages(self, additional_imports: list[str]) -> list[str]:
        """Nothing to do ahead: approved packages are installed when a step imports them."""
        return []

    # -- the end -------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """End the session this executor made (a given ``session_id`` is kept), and close its own loop."""
        if self.owns_session and (self.interp.loop is not None):
            call(
                self.interp,
                lambda: self.interp.sessions.reset(self.user_id, self.session_id),
                what="SandboxExecutor.cleanup",
                hint=_SYNC_HINT,
            )
        close_private(self.interp)
