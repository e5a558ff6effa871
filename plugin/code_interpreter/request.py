"""One execution request, validated once at the entrance: :class:`ExecutionRequest`.

Every way code reaches the sandbox — ``CodeInterpreter.execute``, the seed's ``execute_code``, the tool
dispatcher (which only turns the model's arguments into a request), the integrations — builds one of
these with :meth:`ExecutionRequest.build`. It checks the code (a string, valid Unicode, not empty, within
``max_code_bytes``), the user and session ids, the file ids and the package names' shape, and clamps the
timeout; what it refuses raises :class:`~code_interpreter.errors.ToolArgumentError` with how to fix it.
Nothing below the entrance checks any of this again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ToolArgumentError
from .settings import Settings

__all__ = ["MAX_SESSION_ID", "ExecutionRequest"]

#: Longest session id (a conversation or channel id from the host).
MAX_SESSION_ID = 200


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """What to run, for whom, with which files, for how long: validated, with the timeout clamped."""

    code: str
    """The Python source."""
    user_id: str
    """The trusted user id (from the host application, never from the model)."""
    file_ids: tuple[str, ...] = ()
    """The user's stored files the code may read (read-only, by name in the working directory)."""
    install_packages: tuple[str, ...] = ()
    """Extra approved distributions to install before running."""
    timeout: float = 60.0
    """Wall-clock seconds, within ``settings.max_timeout``."""
    session_id: str | None = None
    """The session whose live process runs the code (state kept between calls); None: one-shot."""
    notes: tuple[str, ...] = ()
    """What the validation changed (a clamped timeout), for the result's notes."""
    owner: int | str | None = None
    """The user id as the host gave it (an int stays an int, as in the token records and the budget):
    the key of the execution's usage record; None: ``user_id``."""

    @classmethod
    def build(
        cls,
        settings: Settings,
        code: Any,
        user_id: int | str,
        user_files: Sequence[str | dict[str, Any]] | None = None,
        install_packages: Sequence[str] | None = None,
        timeout: float | None = None,
        session_id: str | None = None,
    ) -> ExecutionRequest:
        """Validate the arguments of an execution (the seed's ``execute_code`` shape) into a request.

        Raises:
            ToolArgumentError: with what was wrong and how to fix it.
        """
        limit, note = _timeout(settings, timeout)
        return cls(
            code=_code(code, settings.max_code_bytes),
            user_id=_user(user_id),
            file_ids=_file_ids(user_files),
            install_packages=_packages(install_packages),
            timeout=limit,
            session_id=_session(session_id),
            notes=(note,) if note else (),
            owner=user_id,
        )

    def with_files(self, file_ids: Sequence[str]) -> ExecutionRequest:
        """A copy that may read ``file_ids`` too (ids the host looked up after validating the rest)."""
        return dataclasses.replace(self, file_ids=_file_ids([*self.file_ids, *file_ids]))


def _code(code: Any, limit: int) -> str:
    if not isinstance(code, str):
        raise ToolArgumentError(f"code must be a string of Python source, got {type(code).__name__}")
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates: not text any interpreter can run
        line = code.count("\n", 0, exc.start) + 1
        raise ToolArgumentError(
            f"code contains an invalid character (lone surrogate U+{ord(code[exc.start]):04X}) at line "
            f"{line}: send plain UTF-8 text, e.g. write the character as an escape like '\\u00e9'"
        ) from None
    if size > limit:
        raise ToolArgumentError(
            f"the code is {size:,} bytes; the limit is {limit:,} bytes. Put large data in a file (upload "
            "it) and load it with load_file()"
        )
    if not code.strip():
        raise ToolArgumentError("the code is empty: send the Python source to run")
    return code


def _user(user_id: Any) -> str:
    if isinstance(user_id, bool) or not isinstance(user_id, int | str) or str(user_id) == "":
        raise ToolArgumentError(f"user_id must be a non-empty string or an integer, got {user_id!r:.80}")
    return str(user_id)


def _file_ids(user_files: Sequence[str | dict[str, Any]] | None) -> tuple[str, ...]:
    out: list[str] = []
    for item in user_files or ():
        file_id = item.get("file_id") if isinstance(item, dict) else item
        if not isinstance(file_id, str) or not file_id:
            raise ToolArgumentError(f"user_files entries must be file id strings, got {item!r:.120}")
        if file_id not in out:
            out.append(file_id)
    return tuple(out)


def _packages(install_packages: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(install_packages, str):
        raise ToolArgumentError("install_packages must be a list of package names, not one string")
    names = tuple(install_packages or ())
    for name in names:
        if not isinstance(name, str):
            raise ToolArgumentError(f"install_packages must hold package names, got {name!r:.80}")
    return names


def _timeout(settings: Settings, timeout: Any) -> tuple[float, str | None]:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise ToolArgumentError(f"timeout must be a number of seconds, got {timeout!r:.80}")
    return settings.clamp_timeout(timeout)


def _session(session_id: Any) -> str | None:
    if session_id is None:
        return None
    if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID:
        raise ToolArgumentError(
            f"session_id must be a non-empty string of at most {MAX_SESSION_ID} characters "
            f"(a conversation or channel id), got {session_id!r:.80}; pass None for a one-shot call"
        )
    return session_id
