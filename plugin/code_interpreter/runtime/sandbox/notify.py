"""The supervisor's end of the seccomp filter: it answers the calls the allowlist does not hold (stdlib only).

The child loads its filter with a *listener* (seccomp user notification), hands the listener's fd to its
supervisor over a socket made for that alone (:func:`hand_over`) and closes its own copy before any user
code runs: a process holding the listener could answer its own calls. The supervisor's
:class:`Listener` takes each call the filter did not allow, answers EPERM (or, in census mode, lets it
run) and counts it by name, so the cell's result can say which sandbox rule blocked what. The kernel
holds the calling thread until the answer comes (the supervisor serves the listener in every loop in
which it waits); if the supervisor dies, the listener closes and every such call fails from then on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import socket
import struct

# struct seccomp_notif (80 bytes) and struct seccomp_notif_resp (24 bytes), and their ioctls.
_NOTIF = struct.Struct("=QIIiIQ6Q")
_RESP = struct.Struct("=QqiI")
_RECV = 0xC0000000 | (_NOTIF.size << 16) | (ord("!") << 8) | 0
_SEND = 0xC0000000 | (_RESP.size << 16) | (ord("!") << 8) | 1
_CONTINUE = 1
#: Distinct names kept per cell; beyond, calls are counted under "other".
MAX_NAMES = 64

_FAMILIES = {0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}


def describe(name: str, args: tuple[int, ...]) -> str:
    """A call's name, with the argument its rule looks at (socket family, namespace flags of clone)."""
    if name in ("socket", "socketpair"):
        return f"{name}({_FAMILIES.get(args[0], args[0])})"
    if name == "clone" and args[0] & 0x7E020000:
        return "clone(namespace flags)"
    return name


def hand_over(listener_fd: int, sock: socket.socket) -> None:
    """In the child: send the listener to the supervisor, then close both (never keep the listener).

    ``sock`` is made before the filter is loaded: after it, in census mode, every call but the
    ``sendmsg`` that hands the listener over waits for the supervisor, which does not have it yet.
    """
    try:
        if listener_fd >= 0:
            socket.send_fds(sock, [b"L"], [listener_fd])
    finally:
        if listener_fd >= 0:
            os.close(listener_fd)
        sock.close()


class Listener:
    """The supervisor's answers to the child's filtered calls (EPERM, or run them in census mode).

    Not a thread: a supervisor that unshared a PID namespace cannot start one. It is served from the
    supervisor's poll loops instead (:meth:`polled` names what to poll: the hand-over socket until the
    listener arrives, then the listener; :meth:`take_over` and :meth:`answer` when readable). Nothing
    waits for the hand-over: the child takes its first request as soon as its setup is done.
    """

    def __init__(self, sock: socket.socket, names: dict[int, str], *, census: bool) -> None:
        self.sock: socket.socket | None = sock
        self.names = names
        self.census = census
        self.fd = -1
        """The listener, once received (-1 before, and when the kernel has no user notification)."""
        self.counts: dict[str, int] = {}

    def polled(self) -> int:
        """The fd to poll now: the hand-over socket until the listener came, then the listener (or -1)."""
        return self.sock.fileno() if self.sock is not None else self.fd

    def take_over(self) -> int:
        """The hand-over socket is readable: take the child's listener (-1 when it sent none, or died)."""
        sock, self.sock = self.sock, None
        if sock is None:
            return self.fd
        try:
            sock.setblocking(False)
            _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 4)
            for extra in fds[1:]:
                os.close(extra)
            self.fd = fds[0] if fds else -1
        except OSError:
            pass  # no listener: the child loaded the plain filter (or died); refusals are then uncounted
        finally:
            sock.close()
        return self.fd

    def answer(self, event: int) -> bool:
        """Answer one pending call (EPERM; census: let it run) and count it, given the fd's poll ``event``.

        False once no process uses the filter any more: the caller unregisters :attr:`fd` then.
        """
        if not event & select.POLLIN:
            return not event & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
        buf = bytearray(_NOTIF.size)
        try:
            fcntl.ioctl(self.fd, _RECV, buf, True)
        except OSError:
            return True  # ENOENT: the caller died (or was interrupted) before we took the call
        nid, _pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
        key = describe(self.names.get(nr, f"syscall {nr}"), tuple(args))
        if key not in self.counts and len(self.counts) >= MAX_NAMES:
            key = "other"
        self.counts[key] = self.counts.get(key, 0) + 1
        response = _RESP.pack(nid, 0, 0, _CONTINUE) if self.census else _RESP.pack(nid, 0, -errno.EPERM, 0)
        with contextlib.suppress(OSError):  # ENOENT: the caller is gone meanwhile
            fcntl.ioctl(self.fd, _SEND, bytearray(response), True)
        return True

    def take(self) -> dict[str, int]:
        """The calls counted since the last take (refused ones; in census mode, every one)."""
        counts, self.counts = self.counts, {}
        return counts

    def record(self, path: str, label: str, mode: str) -> dict[str, int]:
        """Take the counts, append them to ``path`` as a JSON line (the census tool's log), return them."""
        counts = self.take()
        entry = {"label": label, "mode": mode, "census": self.census, "syscalls": counts}
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            finally:
                os.close(fd)
        return counts
