"""Text tokens: tiktoken with special tokens read as plain text, and a bounded memo.

The agent loop re-estimates the same conversation every round with one more message, so
counting each distinct string once (per encoding) turns an O(conversation) re-tokenization
into dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Callable

from ._encoding import encoding_for_model, get_encoding

__all__ = ["clear_memo", "count_text_tokens", "encoded_len"]

# Strings longer than this are not memoized: they are rare, and would pin a lot of memory.
_MEMO_MAX_CHARS = 20_000
# A generation holds at most this many strings or characters; two generations are kept (~16 M chars).
_GENERATION_ENTRIES = 32_768
_GENERATION_CHARS = 8_000_000


class _Memo:
    """Token counts of recently seen strings of one encoding, in two generations.

    Look-ups promote a string to the young generation; when that fills up it becomes the old one
    and the previous old one is dropped, so strings used every round survive (a cheap LRU).
    """

    __slots__ = ("encode", "old", "young", "young_chars")

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self.encode = encode
        self.young: dict[str, int] = {}
        self.old: dict[str, int] = {}
        self.young_chars = 0

    def count(self, text: str) -> int:
        n = self.young.get(text)
        if n is not None:
            return n
        n = self.old.get(text)
        if n is None:
            n = len(self.encode(text))
        self.young[text] = n
        self.young_chars += len(text)
        if len(self.young) > _GENERATION_ENTRIES or self.young_chars > _GENERATION_CHARS:
            self.old, self.young, self.young_chars = self.young, {}, 0
        return n


_memos: dict[str, _Memo] = {}


def _memo(encoding: str) -> _Memo:
    memo = _memos.get(encoding)
    if memo is None:
        memo = _memos.setdefault(encoding, _Memo(get_encoding(encoding).encode_ordinary))
    return memo


def encoded_len(encoding: str, text: str) -> int:
    """Tokens of ``text`` in ``encoding``; "<|endoftext|>" and friends count as ordinary text."""
    if not text:
        return 0
    memo = _memos.get(encoding) or _memo(encoding)
    if len(text) > _MEMO_MAX_CHARS:
        return len(memo.encode(text))
    return memo.count(text)


def clear_memo() -> None:
    """Forget every memoized count (benchmarks measure counting from scratch with it)."""
    _memos.clear()


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model`` (unknown models use o200k_base)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return encoded_len(encoding_for_model(model).name, text)
