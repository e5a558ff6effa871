"""A seccomp deny-list built with pyseccomp (pure Python over libseccomp via ctypes).

The filter is built once in the zygote (:func:`build_filter`) and loaded in each child as the last
step before user code, after the uid drop and no_new_privs. Denied calls fail with EPERM; the
default action allows everything else, so ordinary data-science code never notices. Foreign
architectures (32-bit syscall entry points) are killed by libseccomp's bad-arch default.
"""

from __future__ import annotations

import errno
import socket
from types import ModuleType
from typing import Any

# Syscalls user code has no business making; each is refused with EPERM.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr",
    "unshare", "setns",
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "uselib", "personality",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "iopl", "ioperm",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fanotify_init", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "nfsservctl",
)  # fmt: skip


def build(pyseccomp: ModuleType) -> Any:
    """Build the filter used in the children (see :data:`DENIED`)."""
    s = pyseccomp
    f = s.SyscallFilter(defaction=s.ALLOW)
    deny = s.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):
            continue
    nosupport = s.ERRNO(errno.EAFNOSUPPORT)
    f.add_rule(nosupport, "socket", s.Arg(0, s.NE, socket.AF_UNIX))
    f.add_rule(nosupport, "socketpair", s.Arg(0, s.NE, socket.AF_UNIX))
    # clone(2) with any namespace flag is refused; fork/threads (no such flags) pass.
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        f.add_rule(deny, "clone", s.Arg(0, s.MASKED_EQ, flag, flag))
    # clone3 passes flags in a struct seccomp cannot inspect: ENOSYS makes glibc fall back to clone.
    f.add_rule(s.ERRNO(errno.ENOSYS), "clone3")
    return f
