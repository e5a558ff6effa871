"""The sandbox's own network namespace: its loopback brought up, nothing else (stdlib only).

A new network namespace holds a single interface, ``lo``, and it is down. The supervisor brings it up
right after unsharing (it holds CAP_NET_ADMIN over that namespace only), so code can serve and connect
on 127.0.0.1 and ::1 *inside* its sandbox, as tests and local servers do. The namespace has no other
interface and no route: the host's own loopback services, the LAN and the internet stay unreachable.
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
# struct ifreq: a 16-byte name, then a union whose first member here is the short ifr_flags (40 bytes).
_IFREQ = struct.Struct("16sh22x")


def loopback_up(name: str = "lo") -> None:
    """Set IFF_UP on ``name`` in this process's network namespace (OSError when not permitted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        current = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(name.encode(), 0))
        flags = _IFREQ.unpack(current)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(name.encode(), flags | IFF_UP))


def loopback_is_up(name: str = "lo") -> bool:
    """Whether ``name`` is up in this process's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        current = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(name.encode(), 0))
        return bool(_IFREQ.unpack(current)[1] & IFF_UP)
