"""Copies of frozen dataclasses on the call path, without ``__init__`` or pickling."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["replaced"]

T = TypeVar("T")


def replaced(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` (an instance of a frozen dataclass *without* slots) with ``changes`` set.

    For values already checked (of the field's type): ``dataclasses.replace`` would run ``__init__`` and
    its checks again, and ``copy.copy`` goes through ``__reduce_ex__``; this copies the instance's
    ``__dict__`` in two C calls (a result is copied a few times per call; slots would need a Python loop
    over the fields, four times slower).
    """
    new = object.__new__(type(obj))
    fields = new.__dict__
    fields.update(obj.__dict__)
    fields.update(changes)
    return new
