"""Exceptions raised by code_interpreter.

Every exception the package raises on purpose derives from :class:`CodeInterpreterError`;
third-party exceptions (pymongo, OSError, pip) are converted where they enter the package.
An error in the *user's code* is not an exception: it is data in the execution result.

    CodeInterpreterError
    ├── ConfigurationError        invalid settings or environment variables
    ├── StorageUnavailable        MongoDB unreachable after bounded retries
    ├── FileStoreError
    │   ├── FileTooLarge          upload over max_file_size
    │   ├── FileNotFound          unknown, expired or another user's file
    │   └── QuotaExceeded         per-user file count or byte quota reached
    ├── PolicyViolation           the AST policy refused the code (a courtesy, not the wall)
    ├── PackageError
    │   ├── PackageNotApproved    a name that is not on the approved list, or not a plain name
    │   └── PackageInstallError   pip failed (network, sdist only, disk full …)
    ├── SandboxError              the sandbox could not be set up or the zygote failed
    │   ├── IsolationUnavailable  the requested isolation mode cannot be had here
    │   ├── SandboxTimeout        wall-clock limit reached (the child was killed)
    │   └── SandboxCrashed        the zygote or child died unexpectedly
    ├── SessionError
    │   ├── LeaseLost             another host took the session over: stop this copy, never save it
    │   ├── SessionBusy           another host holds the session and did not hand it over in time
    │   └── SnapshotRefused       a stored snapshot that may not be used (corrupt, foreign, over its cap)
    ├── ExecutionFailed           the user's code failed (only from ExecutionResult.raise_for_error)
    ├── ToolArgumentError         invalid call arguments (the model's, or a request's)
    └── BudgetExceeded            a request's estimate would pass the user's budget

Inside the package a refusal is raised where it is decided and becomes a failed
:class:`~code_interpreter.executor.ExecutionResult` at the entrance (its ``error_type`` names the class);
``result.raise_for_error()`` raises it again for a host that prefers exceptions.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "CodeInterpreterError",
    "ConfigurationError",
    "ExecutionFailed",
    "FileNotFound",
    "FileStoreError",
    "FileTooLarge",
    "IsolationUnavailable",
    "LeaseLost",
    "PackageError",
    "PackageInstallError",
    "PackageNotApproved",
    "PolicyViolation",
    "QuotaExceeded",
    "SandboxCrashed",
    "SandboxError",
    "SandboxTimeout",
    "SessionBusy",
    "SessionError",
    "SnapshotRefused",
    "StorageUnavailable",
    "ToolArgumentError",
]


class CodeInterpreterError(Exception):
    """Root of every exception raised by code_interpreter."""


class ConfigurationError(CodeInterpreterError, ValueError):
    """A setting or environment variable has an invalid value."""


class StorageUnavailable(CodeInterpreterError):
    """MongoDB could not be reached after bounded retries."""


class FileStoreError(CodeInterpreterError):
    """A file-store operation was refused."""


class FileTooLarge(FileStoreError):
    """An upload exceeded the maximum file size."""


class FileNotFound(FileStoreError):
    """The file does not exist, has expired, or belongs to another user."""


class QuotaExceeded(FileStoreError):
    """The user's file-count or byte quota is reached."""


class PolicyViolation(CodeInterpreterError):
    """The policy check refused the code; the message names the construct and line."""


class PackageError(CodeInterpreterError):
    """A package could not be approved or installed."""


class PackageNotApproved(PackageError):
    """The package is not approved, or its name is not a plain distribution name."""


class PackageInstallError(PackageError):
    """pip failed to install an approved package."""


class SandboxError(CodeInterpreterError):
    """The sandbox could not be set up, or the fork server failed."""


class IsolationUnavailable(SandboxError):
    """The requested isolation mode is not available on this host."""


class SandboxTimeout(SandboxError):
    """The execution hit its wall-clock limit and was killed."""


class SandboxCrashed(SandboxError):
    """The fork server or the execution child died unexpectedly."""


class SessionError(CodeInterpreterError):
    """A session's ownership or its saved snapshot refused an operation."""


class LeaseLost(SessionError):
    """This host no longer owns the session (another host took it over, or it was reset).

    The host must stop its live copy and must not save it: the message names who holds it now.
    """

    def __init__(self, message: str, owner: str | None = None, epoch: int | None = None) -> None:
        super().__init__(message)
        self.owner = owner
        """The host that holds the session now, None when nobody does (or it was reset)."""
        self.epoch = epoch
        """The session's current epoch, None when it no longer exists."""


class SessionBusy(SessionError):
    """Another host holds the session and did not hand it over in time (a long cell, or it stalled)."""


class SnapshotRefused(SessionError):
    """A stored snapshot that may not be used (corrupt, not this session's, over the cap); says why."""


class ExecutionFailed(CodeInterpreterError):
    """The user's code failed (an exception, a non-zero exit): raised only by ``raise_for_error()``."""


class ToolArgumentError(CodeInterpreterError, ValueError):
    """Invalid call arguments: the model's tool-call arguments, or an execution request's."""


class BudgetExceeded(CodeInterpreterError):
    """The request's estimated cost would pass the user's configured budget."""
