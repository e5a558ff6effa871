"""Isolation layers applied to each execution child (Linux): namespaces, mounts, cgroups, uid, seccomp.

Stdlib only (plus pyseccomp, passed in): the zygote loads this package by file path under a private
name inside the sandbox runtime interpreter, which does not have ``code_interpreter`` installed.

Layers, in the order the supervisor and the child apply them:

* ``namespaces``: new mount, network, IPC, UTS and PID namespaces (plus a user namespace in
  ``namespaces`` mode); ``network`` brings the new network namespace's loopback up (nothing else is in it);
* ``mounts``: private propagation first, then a tmpfs root with read-only binds of the system dirs and
  the runtime, a size-limited ``/work`` and ``/tmp``, read-only inputs, ``pivot_root``;
* ``cgroups``: per-execution v1 ``memory`` and ``pids`` controllers where writable (and ``cpuacct``, which
  only counts, for the meter);
* ``limits``: rlimits (CPU, file size, open files, processes, core 0, address space without a memory cgroup);
* ``identity``: capability bounding set emptied, groups cleared, uid/gid dropped, no_new_privs;
* ``seccomp``: an allowlist loaded last; ``notify``: the supervisor's thread that refuses (EPERM) and
  counts the calls outside it.
"""

from __future__ import annotations

from . import _libc, cgroups, identity, limits, mounts, network, notify, seccomp

__all__ = ["LAYERS", "_libc", "cgroups", "identity", "limits", "mounts", "network", "notify", "seccomp"]

#: Layer names reported by ``Executor.status()`` (True when active for the current mode).
LAYERS = (
    "netns",
    "mountns",
    "pidns",
    "ipcns",
    "utsns",
    "userns",
    "uid_drop",
    "no_new_privs",
    "seccomp",
    "rlimits",
    "cgroup_memory",
    "cgroup_pids",
)
