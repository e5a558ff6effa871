"""The child's mount view: a fresh tmpfs root holding only read-only system and runtime binds.

Built by the per-execution supervisor right after it unshared a mount namespace, in three steps:
:func:`make_private` (first, so no mount ever propagates to the host), :func:`build_root` (the tree
under a host directory that only this namespace sees mounted), then in the child :func:`enter_root`
(its own mount namespace copy, a fresh ``/proc``, ``pivot_root`` and detaching the host's tree).
Input files arrive later (:func:`add_inputs`): each is bound and made read-only in a private
staging tmpfs, then *moved* into the shared inputs tmpfs, so the copy that propagates into the
child's namespace is read-only from its first instant (a remount after a propagated bind would
change only the supervisor's copy).

Every mount carries the flags it promises: the root, the system dirs, the runtime and the inputs are
``ro,nosuid,nodev`` (inputs and the root also ``noexec``); the work dir, ``/tmp`` and ``/dev/shm``
are writable but ``nosuid,nodev,noexec``. The base interpreter's own ``site-packages`` (and the
distribution's ``dist-packages``) are covered by empty read-only tmpfs mounts: the sandbox sees
the standard library and the runtime venv, nothing else the host installed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence

from . import _libc as c

WORK_DIR = "/mnt/data"
TMP_DIR = "/tmp"
INPUTS_DIR = "/mnt/inputs"
PROC_DIR = "/proc"

# System directories the interpreter and its shared libraries need (symlinks are recreated as symlinks).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Single host files from /etc that are safe and useful (library lookup, time zones, mime types, certs).
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/ssl/certs/ca-certificates.crt",
)
DEV_NODES = ("null", "zero", "full", "random", "urandom")
_RO_FLAGS = c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV
_SCRATCH_FLAGS = c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC
_INPUT_FLAGS = _RO_FLAGS | c.MS_NOEXEC
#: Inodes the inputs tmpfs keeps free beyond what the inputs of a cell need.
_INODE_SLACK = 64
# statvfs bits that, once set on a mount, must be kept when remounting it (locked in user namespaces).
_ST_KEEP = {os.ST_NOEXEC: c.MS_NOEXEC, os.ST_NOATIME: c.MS_NOATIME, os.ST_NODIRATIME: c.MS_NODIRATIME}


def make_private() -> None:
    """Make every mount in this (new) namespace private: nothing done here reaches the host."""
    c.mount(None, "/", None, c.MS_REC | c.MS_PRIVATE)


def _mkdirs(root: str, path: str) -> str:
    """Create ``path`` under ``root`` (0755 for every new level) and return the full target path."""
    target = root
    for part in [p for p in path.split("/") if p]:
        target = os.path.join(target, part)
        if not os.path.lexists(target):
            os.mkdir(target, 0o755)
    return target


def _touch(root: str, path: str) -> str:
    parent, name = os.path.split(path)
    target = os.path.join(_mkdirs(root, parent), name)
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
    return target


def bind_readonly(source: str, target: str, flags: int = _RO_FLAGS) -> None:
    """Bind ``source`` at ``target`` (not recursive) and remount it read-only, nosuid, nodev (+ ``flags``)."""
    c.mount(source, target, None, c.MS_BIND)
    extra = 0
    try:
        st_flags = os.statvfs(target).f_flag
        extra = sum(bit for st, bit in _ST_KEEP.items() if st_flags & st)
    except OSError:
        pass
    c.mount(None, target, None, c.MS_BIND | c.MS_REMOUNT | _RO_FLAGS | flags | extra)


def _bind_host_path(root: str, path: str) -> None:
    """Reproduce host ``path`` at the same place in the new root (a symlink stays a symlink)."""
    if os.path.islink(path) and os.path.dirname(path) == "/":
        link = os.path.join(root, path.lstrip("/"))
        if not os.path.lexists(link):
            os.symlink(os.readlink(path), link)
        return
    real = os.path.realpath(path)
    if os.path.isdir(real):
        bind_readonly(real, _mkdirs(root, path))
    elif os.path.isfile(real):
        bind_readonly(real, _touch(root, path))


def _covered(path: str, done: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in done)


def build_root(
    root: str,
    readonly_paths: Sequence[str],
    *,
    uid: int,
    gid: int,
    work_bytes: int,
    tmp_bytes: int,
    hidden: Sequence[str] = (),
    stage: str | None = None,
    hostname: str = "sandbox",
) -> None:
    """Mount a fresh tmpfs at ``root`` and populate it; call after :func:`make_private`.

    ``readonly_paths`` are host paths bound read-only at the same path (the runtime venv and its base
    interpreter); ``hidden`` are directories inside them covered by an empty read-only tmpfs (the
    base interpreter's site-packages); the work dir and ``/tmp`` are size-limited tmpfs (the work dir
    owned by ``uid``/``gid``); inputs are added later with :func:`add_inputs`, through ``stage`` (a
    host directory on which a private tmpfs is mounted here).
    """
    for path in readonly_paths:
        if _covered(path, (WORK_DIR, INPUTS_DIR)):
            raise ValueError(f"runtime path {path} lies under the sandbox's {WORK_DIR} or {INPUTS_DIR}")
    c.mount("tmpfs", root, "tmpfs", c.MS_NOSUID | c.MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
    done: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.lexists(path):
            _bind_host_path(root, path)
            done.append(os.path.realpath(path))
    owner = f"uid={uid},gid={gid}"
    work = _mkdirs(root, WORK_DIR)
    c.mount("tmpfs", work, "tmpfs", _SCRATCH_FLAGS, f"size={work_bytes},mode=0700,{owner}")
    c.mount("tmpfs", _mkdirs(root, TMP_DIR), "tmpfs", _SCRATCH_FLAGS, f"size={tmp_bytes},mode=1777")
    _build_dev(root)
    _mkdirs(root, PROC_DIR)
    # After /tmp: a runtime that lives under the host's /tmp (test builds) is bound inside the new tmpfs.
    for path in readonly_paths:
        path = os.path.normpath(path)
        if not _covered(path, done) and os.path.exists(path):
            _bind_host_path(root, path)
            done.append(path)
    for path in hidden:
        target = os.path.join(root, os.path.normpath(path).lstrip("/"))
        if os.path.isdir(target) and not os.path.islink(target):
            c.mount("tmpfs", target, "tmpfs", _INPUT_FLAGS, "size=4k,nr_inodes=16,mode=0755")
    for path in ETC_FILES:
        if os.path.isfile(path):
            _bind_host_path(root, path)
    etc = _mkdirs(root, "/etc")
    _write(
        etc,
        "passwd",
        f"root:x:0:0:root:/root:/bin/false\nsandbox:x:{uid}:{gid}:sandbox:{WORK_DIR}:/bin/false\n",
    )
    _write(etc, "group", f"root:x:0:\nsandbox:x:{gid}:\n")
    _write(etc, "hosts", f"127.0.0.1 localhost {hostname}\n::1 localhost\n")
    _write(etc, "hostname", hostname + "\n")
    _write(etc, "nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n")
    # Inputs arrive after the child entered its own mount namespace: a shared tmpfs (its peer group
    # holds only this namespace and the child's copy) carries the supervisor's later binds into it.
    inputs_dir = _mkdirs(root, INPUTS_DIR)
    c.mount("tmpfs", inputs_dir, "tmpfs", _SCRATCH_FLAGS, "size=1m,nr_inodes=1024,mode=0755")
    c.mount(None, inputs_dir, None, c.MS_SHARED)
    if stage is not None:
        c.mount("tmpfs", stage, "tmpfs", _SCRATCH_FLAGS, "size=1m,nr_inodes=1024,mode=0700")


def add_inputs(root: str, stage: str, inputs: Sequence[tuple[str, str]]) -> None:
    """Show each (host file, path inside) read-only under the shared inputs tmpfs; the child sees them.

    Bound and remounted read-only in the private ``stage`` first, then moved into place: the copy
    the child's namespace receives is a copy of a read-only mount. The inputs tmpfs grows to hold them
    all (any number of files). An error names no host path (the message reaches the model).
    """
    if not inputs:
        return  # most cells: nothing new to show, and no statvfs on the way
    _room_for(os.path.join(root, INPUTS_DIR.lstrip("/")), 2 * len(inputs))
    for index, (host_file, inside) in enumerate(inputs):
        if not _covered(inside, (INPUTS_DIR,)):
            raise ValueError(f"input path {inside} is not under {INPUTS_DIR}")
        try:
            target = _touch(root, inside)
            if os.path.ismount(target):
                continue  # already shown (a later cell of a session names the same file again)
            staged = os.path.join(stage, f"in-{os.getpid()}-{index}")
            os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444))
            try:
                bind_readonly(host_file, staged, _INPUT_FLAGS)
                c.mount(staged, target, None, c.MS_MOVE)
            finally:
                os.unlink(staged)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot show input {inside} in the sandbox: {exc.strerror}") from None


def _room_for(inputs_dir: str, inodes: int) -> None:
    """Raise the inputs tmpfs's inode limit so ``inodes`` more fit (an input takes its directory and its
    mount point); the child's copy shares the filesystem, so it sees the room too."""
    st = os.statvfs(inputs_dir)
    if st.f_ffree >= inodes + _INODE_SLACK:
        return
    total = st.f_files - st.f_ffree + inodes + _INODE_SLACK
    c.mount(None, inputs_dir, None, c.MS_REMOUNT | _SCRATCH_FLAGS, f"nr_inodes={total}")


def _write(directory: str, name: str, text: str) -> None:
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _build_dev(root: str) -> None:
    dev = _mkdirs(root, "/dev")
    for name in DEV_NODES:
        host = "/dev/" + name
        if os.path.exists(host) and stat.S_ISCHR(os.stat(host).st_mode):
            target = _touch(root, host)
            c.mount(host, target, None, c.MS_BIND)
            c.mount(None, target, None, c.MS_BIND | c.MS_REMOUNT | c.MS_NOSUID | c.MS_NOEXEC)
    c.mount("tmpfs", _mkdirs(root, "/dev/shm"), "tmpfs", _SCRATCH_FLAGS, "size=64m,mode=1777")
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, name))


def enter_root(root: str) -> None:
    """In the child (pid 1 of its PID namespace): own mount namespace, /proc, pivot_root, read-only root."""
    c.unshare(c.CLONE_NEWNS)
    c.mount("proc", os.path.join(root, PROC_DIR.lstrip("/")), "proc", c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC)
    # This namespace's copy of the inputs tmpfs is read-only; binds propagated into it keep their own flags.
    inputs = os.path.join(root, INPUTS_DIR.lstrip("/"))
    c.mount(None, inputs, None, c.MS_BIND | c.MS_REMOUNT | _INPUT_FLAGS)
    os.chdir(root)
    c.pivot_root(".", ".")
    # The old root is stacked under the new one: detaching "." drops the whole host tree from this view.
    c.umount2(".", c.MNT_DETACH)
    os.chdir("/")
    c.mount(None, "/", None, c.MS_BIND | c.MS_REMOUNT | _INPUT_FLAGS)
