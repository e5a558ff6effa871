"""The state of one prepared sandbox on the runtime side: :class:`Context` (once per zygote) and
:class:`Warm` (once per supervisor: its namespaces, cgroups, child and the channels to it). Stdlib only."""

from __future__ import annotations

import select
from dataclasses import dataclass, field
from typing import Any

from .config import RuntimeConfig
from .meter import Meter
from .sandbox.cgroups import ExecCgroup
from .streams import StatusReader

__all__ = ["Context", "Warm"]


@dataclass(slots=True)
class Context:
    """What the zygote prepared once: the configuration, the seccomp filter, the cgroup bases."""

    config: RuntimeConfig
    seccomp_filter: Any
    cgroup_bases: dict[str, str]

    @property
    def mode(self) -> str:
        """The isolation mode."""
        return self.config.mode


@dataclass(slots=True)
class Warm:
    """A prepared sandbox: namespaces, mount view and a child waiting for its request."""

    ctx: Context
    name: str
    layers: dict[str, bool]
    cgroup: ExecCgroup | None = None
    pid: int = 0
    wstatus: int | None = None
    error: str | None = None
    work: str = ""
    fds: dict[str, int] = field(default_factory=dict)
    pidfd: int = -1
    poller: select.poll = field(default_factory=select.poll)
    open_fds: set[int] = field(default_factory=set)
    status: StatusReader = field(default_factory=lambda: StatusReader(0, 0, 0))
    shown: set[str] = field(default_factory=set)
    background: dict[int, bytearray] = field(default_factory=dict)
    report_layers: bool = False
    """Each result names the layers that hold (the zygote's self-test asks for it in ``start``)."""
    meter: Meter | None = None
    listener: Any = None
    """The supervisor's end of the seccomp listener (``sandbox.notify.Listener``) once the child is forked."""
