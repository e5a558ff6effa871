"""The one result type, from the sandbox to the edge: :class:`ExecutionResult` and what it carries.

A result is built once — from the supervisor's report (:mod:`.report`), or by :meth:`ExecutionResult.failed`
for a call that was refused or lost its sandbox — and never mutated: storing the generated files gives a
new result with their file ids (:meth:`ExecutionResult.with_files`). The seed's result dict
(:meth:`ExecutionResult.to_dict`) and the dispatcher's :class:`~code_interpreter.tools.ToolResult` are views
of it. An error in the user's code is data here; :meth:`ExecutionResult.raise_for_error` turns any failure
into the matching exception for hosts that prefer one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import errors
from .._copies import replaced
from ..ledger import ExecutionUsage

__all__ = [
    "EventCallback",
    "ExecutionEvent",
    "ExecutionResult",
    "FileRef",
    "GeneratedFile",
    "MeasuredUsage",
    "SessionInfo",
]


@dataclass(frozen=True, slots=True)
class FileRef:
    """A user file to show (read-only) inside one execution."""

    file_id: str
    """The file's id in the file store (the key of ``FILES`` inside the sandbox)."""
    path: Path
    """Host path of a local read-only copy (must be readable by the sandbox uid: mode 0644)."""
    filename: str
    """The user's file name."""
    file_type: str
    """Type hint for ``load_file`` (csv, xlsx, json, image …)."""


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    """A file the code wrote under its work dir (or an open matplotlib figure saved as PNG)."""

    filename: str
    """Path relative to the work dir."""
    data: bytes
    """The file's bytes."""
    mime: str
    """MIME type guessed from the name."""
    size: int
    """Size in bytes."""
    file_id: str | None = None
    """Its id in the file store once stored (None before, or when it could not be stored)."""

    @property
    def file_type(self) -> str:
        """Short type: ``image`` for images, else the extension (``csv``, ``txt`` …)."""
        if self.mime.startswith("image/"):
            return "image"
        suffix = Path(self.filename).suffix.lstrip(".").lower()
        return suffix or "binary"

    def to_dict(self) -> dict[str, Any]:
        """The seed's generated-file entry (``data`` stays bytes)."""
        return {"filename": self.filename, "data": self.data, "type": self.file_type, "mime": self.mime,
                "size": self.size, "file_id": self.file_id}  # fmt: skip


SessionState = Literal["new", "live", "restored", "restarted"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Which session a cell ran in, and how that session came to be."""

    id: str
    """The session id (from the host: a conversation or channel id)."""
    state: SessionState
    """``new``, ``live`` (earlier cells' variables kept), ``restored`` (from a snapshot) or ``restarted``."""
    cell: int
    """The cell's number in the session (it continues after a restore)."""
    handoff: dict[str, Any] | None = None
    """When another host held the session before this cell: ``{"from", "ms", "expired"}`` (who, how long
    taking it over took, and whether that host had stopped answering); None otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "state", "cell"}``, plus ``handoff`` when the session came from another host."""
        out: dict[str, Any] = {"id": self.id, "state": self.state, "cell": self.cell}
        if self.handoff is not None:
            out["handoff"] = dict(self.handoff)
        return out


@dataclass(frozen=True, slots=True)
class MeasuredUsage:
    """What the sandbox's supervisor measured of one cell, from the kernel (never from the code's process)."""

    cpu_seconds: float
    """CPU time (user + system) of every process of the execution, its children included."""
    peak_memory_mb: float
    """Peak memory the cell added (MiB) over what was resident when it started."""
    wall_seconds: float
    """From handing the cell to the sandboxed process to its report (or its deadline)."""
    measured_by: str
    """Where the figures come from: ``cgroup``, ``procfs``, or ``cgroup+procfs`` (CPU from one, memory from
    the other); see ``runtime/meter.py`` for what each can see."""


#: ``error_type`` of a failure → the exception :meth:`ExecutionResult.raise_for_error` raises.
_RAISES: dict[str, type[errors.CodeInterpreterError]] = {
    cls.__name__: cls
    for cls in (
        errors.ToolArgumentError, errors.PolicyViolation, errors.PackageNotApproved,
        errors.PackageInstallError,
        errors.FileNotFound, errors.FileTooLarge, errors.QuotaExceeded, errors.StorageUnavailable,
        errors.SandboxTimeout, errors.SandboxCrashed, errors.IsolationUnavailable, errors.SandboxError,
        errors.BudgetExceeded,
    )
}  # fmt: skip


@dataclass(frozen=True)  # no slots: copied per call by _copies.replaced
class ExecutionResult:
    """What one execution produced; user errors are data here, never exceptions."""

    success: bool
    """True when the code ran to completion with exit code 0."""
    output: str
    """Captured stdout: whole up to max_output_bytes, else its first and last halves around a marker."""
    error: str | None
    """Traceback (user line numbers), timeout or sandbox message; None on success ("" in ``to_dict``)."""
    stderr: str
    """Captured stderr, capped as ``output`` is."""
    execution_time: float
    """Wall-clock seconds of the execution (excluding time queued)."""
    return_code: int
    """Exit code; -1 when the code did not run to its end (refused, timed out, lost), -N for signal N."""
    truncated: bool
    """True when stdout or stderr was cut."""
    isolation: str
    """The isolation mode the code ran under (strict, namespaces, none)."""
    generated: tuple[GeneratedFile, ...] = ()
    """Files written under the work dir, plus open figures as PNG."""
    notes: tuple[str, ...] = ()
    """Remarks for the caller and the model (timeout clamped, caps reached …)."""
    session: SessionInfo | None = None
    """The session of a cell; None for a one-shot execution."""
    error_type: str | None = None
    """Why it failed: the code's own exception name (``ZeroDivisionError``), ``SystemExit``, or the name of
    this package's exception for what stopped it (``SandboxTimeout``, ``PolicyViolation`` …); None on
    success."""
    measured: MeasuredUsage | None = None
    """The sandbox's measures of the cell; None when no sandbox ran it (refused, or lost before reporting)."""
    usage: ExecutionUsage | None = None
    """The execution's usage record (measures, bytes stored, links, cost) once the run path recorded it."""

    @classmethod
    def failed(
        cls,
        error: str | errors.CodeInterpreterError,
        *,
        isolation: str,
        notes: Sequence[str] = (),
        elapsed: float = 0.0,
        error_type: str | None = None,
        session: SessionInfo | None = None,
    ) -> ExecutionResult:
        """The result of a call that was refused, or lost its sandbox (the one way to build a failure)."""
        kind = error_type or (type(error).__name__ if isinstance(error, Exception) else "SandboxError")
        return cls(success=False, output="", error=str(error), stderr="", execution_time=round(elapsed, 4),
                   return_code=-1, truncated=False, isolation=isolation, notes=tuple(notes),
                   session=session, error_type=kind)  # fmt: skip

    def with_notes(self, *notes: str, first: bool = False) -> ExecutionResult:
        """A copy with ``notes`` added (before the others with ``first``)."""
        kept = tuple(n for n in notes if n)
        if not kept:
            return self
        return self._with("notes", (*kept, *self.notes) if first else (*self.notes, *kept))

    def with_files(self, files: Sequence[GeneratedFile]) -> ExecutionResult:
        """A copy whose generated files are ``files`` (the stored ones carry their file ids)."""
        return self._with("generated", tuple(files))

    def with_session(self, session: SessionInfo | None) -> ExecutionResult:
        """A copy that names its session."""
        return self._with("session", session)

    def with_usage(self, usage: ExecutionUsage | None) -> ExecutionResult:
        """A copy carrying its usage record (``to_dict()["usage"]``)."""
        return self._with("usage", usage)

    def _with(self, name: str, value: Any) -> ExecutionResult:
        """A copy with one field changed (on the call path: cheaper than ``dataclasses.replace``, which
        runs ``__init__`` again; the value is of the field's type, so there is nothing to re-check)."""
        return replaced(self, **{name: value})

    def raise_for_error(self) -> ExecutionResult:
        """Return self when it succeeded; else raise the exception matching ``error_type``.

        The code's own failures (an exception, a non-zero exit) raise
        :class:`~code_interpreter.errors.ExecutionFailed`, with this result as ``.result``.
        """
        if self.success:
            return self
        exc_type = _RAISES.get(self.error_type or "", errors.ExecutionFailed)
        exc = exc_type(self.error or "the execution failed")
        exc.result = self  # type: ignore[attr-defined]
        raise exc

    def to_dict(self) -> dict[str, Any]:
        """The seed's result dict (generated files under ``generated_files``; ``error`` is "" on success).

        ``usage`` is the usage record's :meth:`~code_interpreter.ledger.ExecutionUsage.to_dict`
        (``cpu_seconds``, ``peak_memory_mb``, ``wall_seconds``, ``stored_bytes``, ``cost_usd`` …), None
        when nothing ran.
        """
        return {
            "success": self.success,
            "output": self.output,
            "error": self.error or "",
            "execution_time": self.execution_time,
            "return_code": self.return_code,
            "stderr": self.stderr,
            "truncated": self.truncated,
            "isolation": self.isolation,
            "notes": list(self.notes),
            "generated_files": [g.to_dict() for g in self.generated],
            "session": self.session.to_dict() if self.session is not None else None,
            "error_type": self.error_type,
            "usage": self.usage.to_dict() if self.usage is not None else None,
        }


EventKind = Literal["stdout", "stderr", "file", "done"]


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """Something an execution did, reported as it happens (live output for a host that streams)."""

    kind: EventKind
    """``stdout`` / ``stderr`` (a chunk of text), ``file`` (a generated file was stored), ``done``."""
    text: str = ""
    """The chunk of output (stdout/stderr)."""
    filename: str | None = None
    """The generated file's name (``file``)."""
    file_id: str | None = None
    """The stored file's id (``file``), when it was stored."""
    mime: str | None = None
    """The generated file's MIME type (``file``)."""
    success: bool | None = None
    """Whether the execution succeeded (``done``)."""
    call_id: str | None = None
    """The tool call it belongs to, when it came through the dispatcher."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (only the fields that apply)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None and getattr(self, f.name) != ""
        }


EventCallback = Callable[[ExecutionEvent], "Awaitable[None] | None"]
"""Receives each :class:`ExecutionEvent`; may be a plain function or a coroutine function."""
