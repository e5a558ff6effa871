"""What the zygote is told once at start: the sandbox's limits and paths (stdlib only).

The host builds a :class:`RuntimeConfig` from its settings and sends it as the ``config`` frame; the
zygote rebuilds it with :meth:`RuntimeConfig.from_frame`, so every process on the runtime side reads
typed fields instead of dictionary keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .protocol import PROTOCOL_VERSION, Frame, ProtocolError, check_version


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The sandbox's configuration, fixed for a zygote's life."""

    mode: str
    """Isolation: ``strict`` (namespaces + a real uid), ``namespaces`` (a user namespace), ``none``."""
    uid: int
    """The uid (and gid) user code runs as in strict mode."""
    gid: int
    """The gid user code runs as in strict mode."""
    memory_mb: int
    """Memory per execution (a cgroup where writable, else RLIMIT_AS over the warm baseline)."""
    max_processes: int
    """Processes per execution (pids cgroup; RLIMIT_NPROC after the uid drop)."""
    max_parallel: int
    """Executions at once on this host (sizes the RLIMIT_NPROC backstop)."""
    max_open_files: int
    """RLIMIT_NOFILE of the child."""
    work_bytes: int
    """Size of the work dir and of /tmp (tmpfs each); also the largest file the code may write."""
    max_output_bytes: int
    """Captured stdout (and stderr) per cell; head and tail kept."""
    max_generated_files: int
    """Generated files returned per cell."""
    max_generated_bytes: int
    """Bytes of generated files returned per cell."""
    max_snapshot_bytes: int
    """The largest snapshot of a session."""
    max_timeout: float
    """The longest cell (seconds)."""
    session_cpu_s: int
    """CPU seconds a session's process may use in all."""
    save_timeout: float
    """Seconds a snapshot may take before the session is stopped and the snapshot dropped."""
    root_dir: str
    """Host directory the child's tmpfs root is mounted on (in private namespaces only)."""
    stage_dir: str
    """Host directory for staging read-only input binds."""
    work_root: str
    """Host directory of work dirs in mode ``none``."""
    readonly_paths: tuple[str, ...] = ()
    """Host paths bound read-only at the same place (the runtime venv and its base interpreter)."""
    preload: tuple[str, ...] = ()
    """Modules the zygote imports before forking."""
    pool_size: int = 1
    """Warm supervisors kept ready."""
    pyseccomp: str | None = None
    """File of the pyseccomp module to load (the runtime venv does not have it)."""
    seccomp_census: bool = False
    """Census mode (diagnostics, never a sandbox): no call is refused, every one is recorded."""
    seccomp_log: str | None = None
    """File each cell's filtered calls are appended to as a JSON line (refused ones; every call in census
    mode). None in production."""
    hidden: tuple[str, ...] = field(default=())
    """Host package dirs covered in the sandbox's view (filled in by the zygote)."""

    def to_frame(self) -> dict[str, Any]:
        """The ``config`` frame's fields."""
        return {"version": PROTOCOL_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_frame(cls, frame: Frame) -> RuntimeConfig:
        """Rebuild from a ``config`` frame (ProtocolError when a field is missing or of the wrong type)."""
        check_version(frame)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in frame:
                continue
            value = frame[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ProtocolError(f"config frame: {exc}") from None
