"""Settings: one frozen dataclass, read from ``CODE_INTERPRETER_<FIELD>`` environment variables.

Every field can be set in code (``Settings(max_timeout=120)``), from the environment
(``CODE_INTERPRETER_MAX_TIMEOUT=120``; ``MONGODB_URI`` for ``mongodb_uri``), or both:
:meth:`Settings.from_env` reads the environment and applies keyword overrides on top.
Tuples are comma-separated in the environment; booleans accept 1/0/true/false/yes/no.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_PREFIX",
    "FILE_TTL_HOURS",
    "GROUPS",
    "MAX_FILE_SIZE",
    "MAX_OUTPUT_BYTES",
    "MAX_TIMEOUT_S",
    "Settings",
]

ENV_PREFIX = "CODE_INTERPRETER_"

# Limits in one place (the seed's documented behaviour).
FILE_TTL_HOURS = 48.0
MAX_FILE_SIZE = 50 * 2**20
DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 300
MAX_OUTPUT_BYTES = 100_000
MAX_TOOL_OUTPUT_TOKENS = 4_000
MAX_CODE_BYTES = 2_000_000
RUNTIME_REBUILD_DAYS = 7.0

Isolation = Literal["auto", "strict", "namespaces", "none"]
PolicyMode = Literal["default", "off"]
QuotaPolicy = Literal["refuse", "evict"]

DEFAULT_RUNTIME_PACKAGES = (
    "numpy",
    "pandas",
    "matplotlib",
    "seaborn",
    "scipy",
    "openpyxl",
    "pyarrow",
    "pillow",
    "cloudpickle",  # saved sessions: functions and classes defined in cells come along
)
DEFAULT_PRELOAD = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot", "seaborn")


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "code-interpreter"


def _default_parallel() -> int:
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of a CodeInterpreter; every field is also read from the environment.

    Units: durations in seconds and sizes in bytes (the environment also takes ``200MB``, ``1GiB``), but
    for the three the seed's contract names otherwise (``file_expiration_hours``, ``memory_limit_mb``,
    ``runtime_rebuild_days``). Off is ``None`` (``none``/``off`` in the environment); the seed's ``-1``
    for ``file_expiration_hours`` means the same. :data:`GROUPS` orders the fields by stage.
    """

    # -- storage --------------------------------------------------------------
    home: Path = field(default_factory=_default_home)
    """Data directory: embedded database, runtime venv, file cache, work dirs."""
    mongodb_uri: str | None = None
    """MongoDB URI (env ``MONGODB_URI``); None starts the embedded SecantusDB server."""
    database: str = "code_interpreter"
    """Database name used in MongoDB."""
    embedded_idle_s: float = 3.0
    """Seconds the embedded server outlives the last process using it (killed ones included)."""

    # -- files ----------------------------------------------------------------
    file_expiration_hours: float | None = FILE_TTL_HOURS
    """Hours an uploaded or generated file (or saved session) is kept; None (or -1) keeps them forever."""
    max_file_size: int = MAX_FILE_SIZE
    """Largest accepted file in bytes."""
    max_files_per_user: int = 1000
    """Per-user quota: number of unexpired files."""
    max_bytes_per_user: int = 2 * 2**30
    """Per-user quota: total bytes of unexpired files and saved sessions."""
    quota_policy: QuotaPolicy = "refuse"
    """At the quota: refuse the upload or save, or evict the user's oldest files and saved sessions."""
    cleanup_interval_s: float | None = 3600.0
    """Seconds between background cleanups of expired files (and orphans); None: no background cleanup."""

    # -- execution ------------------------------------------------------------
    default_timeout: int = DEFAULT_TIMEOUT_S
    """Wall-clock seconds for an execution when the call gives none."""
    max_timeout: int = MAX_TIMEOUT_S
    """Largest wall-clock timeout a call may ask for."""
    max_code_bytes: int = MAX_CODE_BYTES
    """Largest accepted source code in bytes."""
    max_output_bytes: int = MAX_OUTPUT_BYTES
    """Bytes of stdout (and of stderr) a result keeps; past that, its first and last halves only."""
    max_tool_output_tokens: int = MAX_TOOL_OUTPUT_TOKENS
    """Most tokens of output and errors the model reads per call: the head and tail of the result's text."""
    max_generated_files: int = 20
    """Most generated files returned per execution."""
    max_generated_bytes: int = 50 * 2**20
    """Most bytes of generated files returned per execution."""
    policy: PolicyMode = "default"
    """AST policy check before running (a helpful refusal, not the wall); "off" disables it."""

    # -- sandbox --------------------------------------------------------------
    isolation: Isolation = "auto"
    """Sandbox: auto (strict as root, else namespaces; never runs without one), strict, namespaces, none."""
    sandbox_uid: int = 65534
    """Unprivileged uid the child switches to in strict mode."""
    sandbox_gid: int = 65534
    """Unprivileged gid the child switches to in strict mode."""
    memory_limit_mb: int = 2048
    """Memory limit per execution in MB (cgroup v1 where writable, else RLIMIT_AS)."""
    max_processes: int = 64
    """Process limit per execution (RLIMIT_NPROC after the uid drop, cgroup pids)."""
    max_open_files: int = 256
    """RLIMIT_NOFILE in the child."""
    work_dir_bytes: int = 2**30
    """Size of the child's private work dir and of its /tmp (each a tmpfs); also its largest file."""
    max_parallel: int = field(default_factory=_default_parallel)
    """Most executions running at once; the rest queue."""
    max_parallel_per_user: int | None = None
    """Most executions one user may run at once; None: half of max_parallel (at least 1)."""

    # -- sessions -------------------------------------------------------------
    session_idle_s: float = 1200.0
    """Seconds a live session may sit idle before it is saved and its process stopped."""
    max_sessions: int = 32
    """Most live sessions on this host; a new one makes the least recently used idle one save and stop."""
    max_sessions_per_user: int = 4
    """Most live sessions of one user on this host (the user's least recently used one makes room)."""
    max_snapshot_bytes: int = 200 * 2**20
    """Largest saved session; over it the largest values are left out (and named in the notes)."""
    session_save_timeout_s: float = 30.0
    """Seconds a session's snapshot may take; past it the save is dropped (the next call says so)."""
    max_saved_sessions_per_user: int = 20
    """Most saved sessions one user keeps (their bytes count against the quota); the oldest expires first."""
    session_lease_s: float = 10.0
    """Seconds a host owns a live session unless it renews; after that another host may take it over."""
    session_checkpoint_s: float | None = 2.0
    """Seconds a session must be quiet after a cell before it is saved in the background; None: off."""
    session_checkpoint_max_bytes: int = 16 * 2**20
    """Checkpoints skip a session whose last snapshot was larger (it is still saved when it ends)."""

    # -- runtime and packages -------------------------------------------------
    runtime_dir: Path | None = None
    """Sandbox runtime venv; default ``home/runtime``."""
    runtime_python: str | None = None
    """Base interpreter for the runtime venv; None: the host's, shown to the sandbox by the mount view."""
    runtime_packages: tuple[str, ...] = DEFAULT_RUNTIME_PACKAGES
    """Packages installed when the runtime is created."""
    preload_modules: tuple[str, ...] = DEFAULT_PRELOAD
    """Modules the zygote imports before forking (missing ones are skipped)."""
    approved_packages: tuple[str, ...] | None = None
    """Approved distributions; None uses the shipped list (data/approved_packages.json)."""
    pip_constraints: Path | None = None
    """Optional pip constraints file pinning versions."""
    pip_timeout: int = 900
    """Seconds one pip install may take."""
    runtime_rebuild_days: float | None = RUNTIME_REBUILD_DAYS
    """Rebuild the runtime aside and swap it in after this many days; None never."""

    # -- integrations ---------------------------------------------------------
    mcp_max_pending_per_session: int = 4
    """MCP server: most tool calls of one connection running or waiting at once; more get an error result."""
    mcp_max_pending_per_user: int = 16
    """MCP server: most tool calls of one user (all their tokens and connections) running or waiting."""

    # -- costs and tokens -----------------------------------------------------
    daily_budget_usd: float | None = None
    """Per-user USD per UTC day, tokens and sandbox, checked before each request and tool call; None: off."""
    image_hosts: tuple[str, ...] = ("cdn.discordapp.com", "media.discordapp.net")
    """Hosts whose image headers may be read to size images for token estimates."""
    prices_file: Path | None = None
    """Operator's price file over data/prices.json (its compute section: over compute_prices.json)."""

    def __post_init__(self) -> None:
        self._validate()

    # -- derived -------------------------------------------------------------
    @property
    def runtime_path(self) -> Path:
        """The runtime venv directory."""
        return self.runtime_dir if self.runtime_dir is not None else self.home / "runtime"

    @property
    def per_user_parallel(self) -> int:
        """Effective per-user parallel cap."""
        if self.max_parallel_per_user is not None:
            return min(self.max_parallel_per_user, self.max_parallel)
        return max(1, self.max_parallel // 2)

    @property
    def file_ttl_seconds(self) -> float | None:
        """File lifetime in seconds, None for never."""
        return None if self.file_expiration_hours is None else self.file_expiration_hours * 3600.0

    def clamp_timeout(self, timeout: float | None) -> tuple[float, str | None]:
        """Return (effective timeout, note) for a requested timeout; the note says what was changed."""
        if timeout is None:
            return float(self.default_timeout), None
        if timeout <= 0:
            return float(
                self.default_timeout
            ), f"timeout {timeout!r} is not positive; used the default {self.default_timeout} s"
        if timeout > self.max_timeout:
            note = f"timeout {timeout!r} exceeds the maximum; used {self.max_timeout} s"
            return float(self.max_timeout), note
        return float(timeout), None

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (paths as strings), for status reports."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            if f.name == "mongodb_uri" and v:
                v = _redact_uri(v)
            out[f.name] = v
        return out

    # -- construction --------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``CODE_INTERPRETER_*`` variables and ``MONGODB_URI``, then ``overrides``."""
        env = os.environ if env is None else env
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = "MONGODB_URI" if f.name == "mongodb_uri" else ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None and f.name == "mongodb_uri":
                raw = env.get(ENV_PREFIX + "MONGODB_URI")
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _parse(raw, hints[f.name], size=_is_size(f.name))
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{name}={raw!r}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def _validate(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            choices = _literal_choices(hints[f.name])
            v = getattr(self, f.name)
            if choices and v not in choices:
                raise ConfigurationError(f"{f.name}={v!r}: choose one of {', '.join(map(repr, choices))}")
        for name in _path_fields(type(self)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_path(name, value))
        # The older spellings of "off" (the seed's -1, and 0) are read as the one spelling, None.
        for name in _OFF_SPELLINGS:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                object.__setattr__(self, name, None)
        if self.file_expiration_hours is not None and self.file_expiration_hours < 0:
            object.__setattr__(self, "file_expiration_hours", None)
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive, got {value!r}")
        if self.default_timeout > self.max_timeout:
            raise ConfigurationError(
                f"default_timeout ({self.default_timeout}) must not exceed max_timeout ({self.max_timeout})"
            )
        if self.embedded_idle_s < 0:
            raise ConfigurationError(f"embedded_idle_s must be >= 0 seconds, got {self.embedded_idle_s!r}")
        if self.file_expiration_hours == 0:
            raise ConfigurationError(
                "file_expiration_hours must be positive, or None (-1) to keep files forever"
            )


#: Fields whose "off" may also be written as a number <= 0 (file_expiration_hours: the seed's -1 only).
_OFF_SPELLINGS = ("runtime_rebuild_days", "cleanup_interval_s", "max_parallel_per_user",
                  "session_checkpoint_s")  # fmt: skip
_POSITIVE = (
    "max_file_size", "default_timeout", "max_timeout", "max_output_bytes", "max_tool_output_tokens",
    "max_code_bytes", "memory_limit_mb", "max_processes", "max_open_files", "max_parallel", "work_dir_bytes",
    "max_files_per_user", "max_bytes_per_user", "pip_timeout", "session_idle_s", "max_sessions",
    "max_sessions_per_user", "max_snapshot_bytes", "session_save_timeout_s", "max_generated_files",
    "max_generated_bytes", "mcp_max_pending_per_session", "mcp_max_pending_per_user",
    "max_saved_sessions_per_user", "session_lease_s", "session_checkpoint_max_bytes",
)  # fmt: skip

#: The settings by stage, in the order of the README's table (a test checks every field is in one group).
GROUPS: dict[str, tuple[str, ...]] = {
    "storage": ("home", "mongodb_uri", "database", "embedded_idle_s"),
    "files": ("file_expiration_hours", "max_file_size", "max_files_per_user", "max_bytes_per_user",
              "quota_policy", "cleanup_interval_s"),
    "execution": ("default_timeout", "max_timeout", "max_code_bytes", "max_output_bytes",
                  "max_tool_output_tokens", "max_generated_files", "max_generated_bytes", "policy"),
    "sandbox": ("isolation", "sandbox_uid", "sandbox_gid", "memory_limit_mb", "max_processes",
                "max_open_files", "work_dir_bytes", "max_parallel", "max_parallel_per_user"),
    "sessions": ("session_idle_s", "max_sessions", "max_sessions_per_user", "max_snapshot_bytes",
                 "session_save_timeout_s", "max_saved_sessions_per_user", "session_lease_s",
                 "session_checkpoint_s", "session_checkpoint_max_bytes"),
    "runtime and packages": ("runtime_dir", "runtime_python", "runtime_packages", "preload_modules",
                             "approved_packages", "pip_constraints", "pip_timeout", "runtime_rebuild_days"),
    "integrations": ("mcp_max_pending_per_session", "mcp_max_pending_per_user"),
    "costs and tokens": ("daily_budget_usd", "image_hosts", "prices_file"),
}  # fmt: skip

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(raw: str) -> int:
    """Bytes from ``"1048576"``, ``"200MB"``, ``"1GiB"`` (case and spaces ignored)."""
    text = raw.strip().lower().replace(" ", "").replace("_", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    if unit not in _SIZE_UNITS or not number:
        raise ValueError("expected a size in bytes, e.g. 1048576, 200MB or 1GiB")
    return int(float(number) * _SIZE_UNITS[unit])


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints evaluates every annotation string: milliseconds per call, so do it once per class.
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


_PATH_FIELDS: dict[type, tuple[str, ...]] = {}


def _path_fields(cls: type) -> tuple[str, ...]:
    """Fields typed ``Path`` or ``Path | None``: each also takes a str (``~`` expanded), as from_env does."""
    if cls not in _PATH_FIELDS:
        hints = _hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        _PATH_FIELDS[cls] = tuple(n for n in names if Path in (hints[n], *typing.get_args(hints[n])))
    return _PATH_FIELDS[cls]


def _as_path(name: str, value: object) -> Path:
    """``value`` as a Path with ``~`` expanded; a ConfigurationError for anything that is not a path."""
    if isinstance(value, str | os.PathLike):
        return Path(value).expanduser()
    raise ConfigurationError(f"{name} must be a path (a str or a pathlib.Path), got {type(value).__name__}")


def _redact_uri(uri: str) -> str:
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return uri


def _literal_choices(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return ()


def _is_size(name: str) -> bool:
    return name.endswith("_bytes") or name == "max_file_size"


def _parse(raw: str, tp: Any, *, size: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.strip().lower() in ("none", "null", "off", "never"):
            return None
        return _parse(raw, args[0], size=size)
    if size and tp is int:
        return parse_size(raw)
    if origin is Literal:
        return raw.strip()
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if tp is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected a boolean (1/0, true/false)")
    if tp is int:
        return int(raw.strip())
    if tp is float:
        return float(raw.strip())
    if tp is Path:
        return Path(raw).expanduser()
    return raw
