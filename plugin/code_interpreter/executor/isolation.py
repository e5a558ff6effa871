"""Which isolation mode this host can have, and why: ``auto`` picks one or fails closed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["isolation_problem", "resolve_isolation"]


def isolation_problem(mode: str) -> str | None:
    """Why ``mode`` cannot be had on this host, or None when it can (the zygote's probe confirms)."""
    if mode == "none":
        return None
    if not sys.platform.startswith("linux"):
        return f"{mode} isolation needs Linux namespaces (this is {sys.platform})"
    if mode == "strict" and os.geteuid() != 0:
        return (
            f"strict isolation needs root (a real uid switch to the sandbox uid); this process runs as uid "
            f"{os.geteuid()} — use isolation='namespaces' (user namespaces) or 'auto'"
        )
    if mode == "namespaces" and os.geteuid() == 0:
        # A user namespace made by root maps the code to the host's uid 0: root's own 0600 files and
        # everything root owns would be open to it, by ownership alone.
        return (
            "isolation='namespaces' as root would run user code as the host's uid 0 inside a user namespace "
            "(root-owned files would be its own) — use isolation='strict' (a real switch to sandbox_uid) "
            "or 'auto' (strict as root)"
        )
    if mode == "namespaces":
        try:
            if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
                return "user namespaces are disabled (user.max_user_namespaces = 0)"
            flag = Path("/proc/sys/kernel/unprivileged_userns_clone")
            if os.geteuid() != 0 and flag.exists() and flag.read_text().strip() == "0":
                return "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)"
        except (OSError, ValueError):
            return "cannot read the user-namespace settings under /proc/sys"
    return None


def resolve_isolation(setting: str) -> tuple[str, str]:
    """(mode, reason) for a configured isolation; ``auto`` is strict as root, else user namespaces.

    Fails closed: when ``auto`` finds neither, the mode is ``unavailable`` and the reason names what is
    missing (executions are then refused); only an explicit ``none`` runs code without a sandbox.
    """
    if setting != "auto":
        return setting, f"isolation={setting!r} was set explicitly"
    if not sys.platform.startswith("linux"):
        return (
            "unavailable",
            f"isolation='auto' found no sandbox: Linux namespaces are needed (this is {sys.platform})",
        )
    if os.geteuid() == 0:
        return "strict", "auto: running as root, so namespaces plus a real switch to the sandbox uid"
    problem = isolation_problem("namespaces")
    if problem is None:
        return "namespaces", f"auto: running as uid {os.geteuid()} (not root), so user namespaces"
    return "unavailable", f"isolation='auto' found no sandbox: not root, and {problem}"
