"""Copies of frozen, slotted dataclasses on the call path, without ``__init__`` or pickling."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["replaced"]

T = TypeVar("T")


def replaced(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` (an instance of a ``slots=True`` dataclass) with ``changes`` set.

    For values already checked (of the field's type): ``dataclasses.replace`` would run ``__init__`` and
    its checks again, and ``copy.copy`` goes through ``__reduce_ex__``; this copies the slots directly,
    several times faster, which matters for a result copied a few times per call.
    """
    cls = type(obj)
    new = object.__new__(cls)
    for name in cls.__slots__:  # type: ignore[attr-defined]
        object.__setattr__(new, name, changes[name] if name in changes else getattr(obj, name))
    return new
