"""Result types of the executor: frozen dataclasses with ``to_dict()`` in the seed's shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    """Captured stdout (capped; head and tail kept)."""
    error: str | None
    """Traceback (user line numbers), timeout or sandbox message; None on success ("" in ``to_dict``)."""
    stderr: str
    """Captured stderr (capped; head and tail kept)."""
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
        }
