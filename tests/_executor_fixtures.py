"""Shared helpers of the executor and sandbox tests: an executor with small limits, in the mode this host has.

The escape suite runs in ``strict`` mode as root and in ``namespaces`` mode as an unprivileged user
(``.ci/run`` does both). :func:`sandbox_mode` picks the mode; a test that cannot run in it fails.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from code_interpreter.executor import Executor
from code_interpreter.settings import Settings

#: Wall-clock timeout of the bomb cases (the suite's time is dominated by these).
BOMB_TIMEOUT = 2.0
SECRET = "ci-test-secret-4f1d2b"


def small_settings(home: Path, **overrides: Any) -> Settings:
    """Strict settings with limits small enough that every bomb hits one quickly."""
    values: dict[str, Any] = {
        "home": home,
        "isolation": "strict",
        "memory_limit_mb": 256,
        "max_processes": 32,
        "max_open_files": 64,
        "work_dir_bytes": 32 * 2**20,
        "max_output_bytes": 4000,
        "max_parallel": 6,
        "max_parallel_per_user": 3,
        "default_timeout": 5,
        "max_timeout": 10,
        "preload_modules": ("numpy", "pandas", "matplotlib", "matplotlib.pyplot"),
    }
    values.update(overrides)
    return Settings(**values)


def host_secrets(root: Path) -> Path:
    """A host directory with a root-only (0600) file, made visible in the sandbox's mount view."""
    secrets = root / "host-secrets"
    secrets.mkdir(mode=0o755, exist_ok=True)
    os.chmod(secrets, 0o755)
    secret = secrets / "root-only.txt"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)
    (secrets / "public.txt").write_text("public")
    os.chmod(secrets / "public.txt", 0o644)
    return secrets


async def started_executor(
    settings: Settings, runtime: Any, extra: tuple[Path, ...] = ()
) -> AsyncIterator[Executor]:
    """Start an executor (the runtime's read-only paths extended by ``extra``), close it afterwards."""
    if extra:
        runtime = dataclasses.replace(runtime, extra_paths=tuple(runtime.extra_paths) + extra)
    executor = Executor(settings, runtime)
    await executor.start()
    try:
        yield executor
    finally:
        await executor.close()


#: Layers that must be active, per mode: strict adds a second uid (and cgroups, root only); namespaces
#: a user namespace instead.
CORE_LAYERS = {"netns", "mountns", "pidns", "seccomp", "rlimits", "no_new_privs"}
REQUIRED_LAYERS = {"strict": CORE_LAYERS | {"uid_drop"}, "namespaces": CORE_LAYERS | {"userns"}}

#: Uid the sandboxed code sees for itself, per mode (in a user namespace it is root *of that namespace*).
INSIDE_UID = {"strict": 65534, "namespaces": 0}


def sandbox_mode() -> str:
    """``strict`` as root, ``namespaces`` as any other user (failing loudly when that is not available)."""
    if os.geteuid() == 0:
        return "strict"
    from code_interpreter.executor import isolation_problem

    problem = isolation_problem("namespaces")
    if problem:
        pytest.fail(f"the escape suite needs root or user namespaces here: {problem}")
    return "namespaces"


def root_owned_secret(tmp: Path) -> Path:
    """A 0600 file owned by root: made here as root, or by .ci/run for an unprivileged run."""
    if os.geteuid() == 0:
        secrets = host_secrets(tmp)
        return secrets / "root-only.txt"
    given = os.environ.get("CODE_INTERPRETER_TEST_ROOT_SECRET")
    if not given or not Path(given).is_file() or Path(given).stat().st_uid != 0:
        pytest.fail(
            "as an unprivileged user the escape suite needs a root-owned 0600 file holding the test secret, "
            "named by CODE_INTERPRETER_TEST_ROOT_SECRET (.ci/run creates it)"
        )
    return Path(given)


def require_root() -> None:
    """Strict isolation needs root: fail loudly elsewhere rather than pretend."""
    if os.geteuid() != 0:
        pytest.fail("the strict-sandbox tests need root (run them in the project's root container)")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def processes_running(cmdline: str) -> list[int]:
    """Host pids whose command line contains ``cmdline`` (NUL-separated arguments)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if cmdline.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found
