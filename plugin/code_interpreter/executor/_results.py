"""Result types of the executor (frozen dataclasses with ``to_dict()`` in the seed's shape), and the
turning of a supervisor's report into an :class:`ExecutionResult`."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..files.names import safe_filename


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

    @property
    def file_type(self) -> str:
        """Short type: ``image`` for images, else the extension (``csv``, ``txt`` …)."""
        if self.mime.startswith("image/"):
            return "image"
        suffix = Path(self.filename).suffix.lstrip(".").lower()
        return suffix or "binary"

    def to_dict(self) -> dict[str, Any]:
        """The seed's generated-file entry (``data`` stays bytes)."""
        return {
            "filename": self.filename,
            "data": self.data,
            "type": self.file_type,
            "mime": self.mime,
            "size": self.size,
        }


@dataclass(frozen=True, slots=True)
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
    """Exit code; -1 on timeout, -N when killed by signal N."""
    truncated: bool
    """True when stdout or stderr was cut."""
    isolation: str
    """The isolation mode the code ran under (strict, namespaces, none)."""
    generated: tuple[GeneratedFile, ...] = ()
    """Files written under the work dir, plus open figures as PNG."""
    notes: tuple[str, ...] = ()
    """Remarks for the caller and the model (timeout clamped, caps reached …)."""
    session: dict[str, Any] | None = None
    """``{"id", "state", "cell"}`` for a cell of a session; None for a one-shot execution."""

    def to_dict(self) -> dict[str, Any]:
        """The seed's result dict (generated files under ``generated_files``; ``error`` is "" on success)."""
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
            "session": dict(self.session) if self.session is not None else None,
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
            k: getattr(self, k)
            for k in self.__slots__
            if getattr(self, k) is not None and getattr(self, k) != ""
        }


EventCallback = Callable[[ExecutionEvent], "Awaitable[None] | None"]
"""Receives each :class:`ExecutionEvent`; may be a plain function or a coroutine function."""


@dataclass(slots=True)
class Outcome:
    """What the host knew when it turned a report into a result."""

    mode: str
    timeout: float
    max_timeout: int
    max_output_bytes: int
    memory_limit_mb: int
    notes: list[str] = field(default_factory=list)


def relative_name(name: object) -> str:
    """A generated file's path relative to the work dir, from the sandboxed process's own report.

    That report is plain data the user's code could forge: every component is made harmless, and
    nothing absolute or climbing out (``..``) survives.
    """
    parts = [p for p in str(name).replace("\\", "/").split("/") if p.strip() not in ("", ".", "..")]
    return "/".join(safe_filename(p) for p in parts) or "file"


def dropped_note(stream: str, dropped: int, cap: int) -> str:
    """What a result says of a stream over the cap: how big it was, what was kept, that the rest is gone."""
    head = cap // 2
    return (
        f"{stream} was {dropped + cap:,} bytes: only its first {head:,} and last {cap - head:,} were kept "
        f"(max_output_bytes); the {dropped:,} between are gone"
    )


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def failure(error: str, mode: str, notes: Sequence[str], elapsed: float = 0.0) -> ExecutionResult:
    """A failed result that never reached (or lost) the sandbox."""
    return ExecutionResult(
        success=False, output="", error=error, stderr="", execution_time=elapsed, return_code=-1,
        truncated=False, isolation=mode, generated=(), notes=tuple(notes),
    )  # fmt: skip


def from_report(
    header: dict[str, Any], blobs: list[bytes], outcome: Outcome, elapsed: float
) -> ExecutionResult:
    """The :class:`ExecutionResult` of a supervisor's ``result`` frame and the files' bytes."""
    status = header.get("status")
    stdout = str(header.get("stdout", ""))
    stderr = str(header.get("stderr", ""))
    rc = int(header.get("exit_code", -1))
    notes = outcome.notes + [str(n) for n in header.get("notes", [])]
    truncated = bool(header.get("stdout_dropped") or header.get("stderr_dropped"))
    for name in ("stdout", "stderr"):
        dropped = int(header.get(f"{name}_dropped") or 0)
        if dropped:
            notes.append(dropped_note(name, dropped, outcome.max_output_bytes))
    hint = f"pass timeout= up to {outcome.max_timeout}, or process the data in chunks"
    seconds = _fmt_seconds(outcome.timeout)
    error: str | None = None
    if status == "timeout":
        rc = -1
        error = f"Execution timeout after {seconds} seconds — {hint}"
        if header.get("session"):
            error += (
                ". The code did not stop at an interrupt, so the session's process was killed: its "
                "variables are gone and the next call starts a new session"
            )
    elif status == "interrupted":
        rc = -1
        error = (
            f"Execution interrupted after {seconds} seconds (KeyboardInterrupt); the session's variables "
            f"are kept — {hint}"
        )
    elif status == "bad_report":
        rc = -1
        error = (
            f"Execution stopped: {header.get('error', 'invalid report')} — the code wrote into the "
            "sandbox's own status channel (an inherited file descriptor); write only to your own files"
        )
    elif status != "ok":
        rc = -1
        error = f"Sandbox setup failed: {header.get('error', 'unknown error')}"
    elif header.get("oom"):
        error = (
            f"Memory limit exceeded ({outcome.memory_limit_mb} MB): the process was killed — "
            "process the data in chunks or use smaller dtypes"
        )
    elif "signal" in header:
        sig = int(header["signal"])
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        reason = " (CPU time limit)" if sig == signal.SIGXCPU else ""
        error = f"Process killed by signal {name}{reason}"
        if stderr.strip():
            error += "\n" + stderr.strip()
    elif rc != 0:
        error = stderr.strip() or f"Process exited with code {rc}"
        if error.rsplit("\n", 1)[-1].startswith("MemoryError"):
            # Without a memory cgroup the limit is RLIMIT_AS: the allocation fails inside Python.
            error = (
                f"Memory limit exceeded ({outcome.memory_limit_mb} MB) — process the data in chunks or use "
                f"smaller dtypes\n{error}"
            )
    generated = tuple(
        GeneratedFile(
            filename=relative_name(f["filename"]), data=blob, mime=str(f.get("mime", "")), size=len(blob)
        )
        for f, blob in zip(header.get("files", []), blobs, strict=False)
    )
    return ExecutionResult(
        success=error is None, output=stdout, error=error, stderr=stderr, execution_time=elapsed,
        return_code=rc, truncated=truncated, isolation=outcome.mode, generated=generated, notes=tuple(notes),
    )  # fmt: skip
