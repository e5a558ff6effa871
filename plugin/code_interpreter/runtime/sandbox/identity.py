"""The switch to the unprivileged identity: groups cleared, uid/gid dropped, no capabilities, no_new_privs."""

from __future__ import annotations

import contextlib
import os

from . import _libc as c

_CAP_LAST_FALLBACK = 40


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return _CAP_LAST_FALLBACK


def drop_privileges(uid: int, gid: int) -> None:
    """Empty the capability bounding set, then setgroups([]), setresgid, setresuid (all three ids).

    A uid change from 0 to non-zero clears the permitted and effective capabilities; the emptied
    bounding set makes sure nothing can be regained through a file capability.
    """
    for cap in range(_cap_last() + 1):
        with contextlib.suppress(OSError):
            c.prctl(c.PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError("privilege drop did not take effect")


def drop_capabilities() -> None:
    """Empty the bounding set and every capability set while keeping the uid (``namespaces`` mode).

    In a user namespace the child is uid 0 of that namespace with every capability *in it*: enough to
    remount its own view read-write or unmount the input binds. No uid can be switched to there (only
    one id is mapped), so the capabilities are dropped explicitly instead.
    """
    for cap in range(_cap_last() + 1):
        with contextlib.suppress(OSError):
            c.prctl(c.PR_CAPBSET_DROP, cap)
    c.clear_capabilities()
    if any(c.capabilities()):
        raise OSError("capabilities are still held after dropping them")


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): execve can never grant privileges (setuid bits, file caps)."""
    c.prctl(c.PR_SET_NO_NEW_PRIVS, 1)


def write_id_maps(inside_uid: int, outside_uid: int, outside_gid: int) -> None:
    """After unshare(CLONE_NEWUSER) by an unprivileged process: map one id (ours) into the namespace."""
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{inside_uid} {outside_uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{inside_uid} {outside_gid} 1")
