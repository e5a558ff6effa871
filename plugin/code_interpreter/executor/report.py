"""Turning a supervisor's ``result`` frame into an :class:`ExecutionResult`: the messages a model reads."""

from __future__ import annotations

import math
import re
import signal
from dataclasses import dataclass, field
from typing import Any

from ..files.names import safe_filename
from .results import ExecutionResult, GeneratedFile, MeasuredUsage

__all__ = ["Outcome", "blocked_note", "from_report", "measured_usage", "relative_name"]

_NUMBER = (int, float)

# The last line of a traceback names the exception: "ZeroDivisionError: division by zero".
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


@dataclass(slots=True)
class Outcome:
    """What the host knew when it turned a report into a result."""

    mode: str
    timeout: float
    max_timeout: float
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


def blocked_note(blocked: object, *texts: str | None) -> str | None:
    """The note for calls the sandbox's seccomp rules refused, when the code shows an EPERM from one.

    ``blocked`` is the supervisor's count by call (refusals only: it answers them itself); the note is
    given when the code's output or error shows "Operation not permitted" or a PermissionError, since
    only then can a refusal be what the code tripped over.
    """
    if not isinstance(blocked, dict) or not blocked:
        return None
    shown = "\n".join(t for t in texts if t)
    if not any(mark in shown for mark in ("Operation not permitted", "PermissionError", "EPERM")):
        return None
    calls = sorted(((str(k)[:60], v) for k, v in blocked.items() if isinstance(v, int)), key=lambda c: -c[1])
    listed = ", ".join(f"{name} ({count} times)" if count > 1 else name for name, count in calls[:8])
    return (
        f"a sandbox rule (seccomp) refused {listed} with EPERM (Operation not permitted): that system call "
        "is not available in the sandbox, whatever the file or the permissions — do it another way"
    )


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _exception_name(text: str) -> str | None:
    for line in reversed(text.strip().splitlines()):
        if line and not line.startswith((" ", "\t")):
            match = _EXCEPTION_LINE.match(line)
            return match.group(1).rsplit(".", 1)[-1] if match else None
    return None


def _error(header: dict[str, Any], outcome: Outcome, stderr: str, rc: int) -> tuple[str | None, str | None]:
    """(error message, error type) of a report; (None, None) when the code succeeded."""
    status = header.get("status")
    hint = f"pass timeout= up to {_fmt_seconds(outcome.max_timeout)}, or process the data in chunks"
    seconds = _fmt_seconds(outcome.timeout)
    if status == "timeout":
        error = f"Execution timeout after {seconds} seconds — {hint}"
        if header.get("session"):
            error += (
                ". The code did not stop at an interrupt, so the session's process was killed: its "
                "variables are gone and the next call starts a new session"
            )
        return error, "SandboxTimeout"
    if status == "interrupted":
        return (
            f"Execution interrupted after {seconds} seconds (KeyboardInterrupt); the session's variables "
            f"are kept — {hint}",
            "SandboxTimeout",
        )
    if status == "bad_report":
        return (
            f"Execution stopped: {header.get('error', 'invalid report')} — the code wrote into the "
            "sandbox's own status channel (an inherited file descriptor); write only to your own files",
            "SandboxCrashed",
        )
    if status != "ok":
        return f"Sandbox setup failed: {header.get('error', 'unknown error')}", "SandboxError"
    if header.get("oom"):
        return (
            f"Memory limit exceeded ({outcome.memory_limit_mb} MB): the process was killed — "
            "process the data in chunks or use smaller dtypes",
            "MemoryError",
        )
    if "signal" in header:
        sig = int(header["signal"])
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        reason = " (CPU time limit)" if sig == signal.SIGXCPU else ""
        error = f"Process killed by signal {name}{reason}"
        return (error + "\n" + stderr.strip() if stderr.strip() else error), "SandboxCrashed"
    if rc == 0:
        return None, None
    error = stderr.strip() or f"Process exited with code {rc}"
    kind = _exception_name(stderr) if stderr.strip() else "SystemExit"
    if kind == "MemoryError":
        # Without a memory cgroup the limit is RLIMIT_AS: the allocation fails inside Python.
        error = (
            f"Memory limit exceeded ({outcome.memory_limit_mb} MB) — process the data in chunks or use "
            f"smaller dtypes\n{error}"
        )
    return error, kind or "SystemExit"


def measured_usage(usage: object) -> MeasuredUsage | None:
    """The supervisor's measures of a cell (its ``usage`` field); None when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    numbers = []
    for key in ("cpu_seconds", "peak_memory_bytes", "wall_seconds"):
        value = usage.get(key)
        if isinstance(value, bool) or not isinstance(value, _NUMBER) or not math.isfinite(value):
            return None
        numbers.append(max(0.0, float(value)))
    cpu, peak, wall = numbers
    sources = {str(usage.get("cpu_source") or "")[:20], str(usage.get("memory_source") or "")[:20]} - {""}
    by = "+".join(sorted(sources)) or "unknown"
    return MeasuredUsage(round(cpu, 6), round(peak / 2**20, 3), round(wall, 6), by)


def from_report(
    header: dict[str, Any], blobs: list[bytes], outcome: Outcome, elapsed: float
) -> ExecutionResult:
    """The :class:`ExecutionResult` of a supervisor's ``result`` frame and the files' bytes."""
    stdout = str(header.get("stdout", ""))
    stderr = str(header.get("stderr", ""))
    rc = header.get("exit_code", -1)
    rc = rc if isinstance(rc, int) and not isinstance(rc, bool) else -1
    notes = outcome.notes + [str(n) for n in header.get("notes", [])]
    truncated = bool(header.get("stdout_dropped") or header.get("stderr_dropped"))
    for name in ("stdout", "stderr"):
        dropped = int(header.get(f"{name}_dropped") or 0)
        if dropped:
            notes.append(dropped_note(name, dropped, outcome.max_output_bytes))
    if header.get("dropped_events"):
        notes.append(f"{header['dropped_events']} live output event(s) were dropped (the host lagged)")
    error, error_type = _error(header, outcome, stderr, rc)
    refused = blocked_note(header.get("blocked"), stdout, stderr, error)
    if refused:
        notes.append(refused)
    if error is not None and header.get("status") != "ok":
        rc = -1
    generated = tuple(
        GeneratedFile(
            filename=relative_name(f["filename"]), data=blob, mime=str(f.get("mime", "")), size=len(blob)
        )
        for f, blob in zip(header.get("files", []), blobs, strict=False)
    )
    return ExecutionResult(
        success=error is None, output=stdout, error=error, stderr=stderr, execution_time=elapsed,
        return_code=rc, truncated=truncated, isolation=outcome.mode, generated=generated, notes=tuple(notes),
        error_type=error_type, measured=measured_usage(header.get("usage")),
    )  # fmt: skip
