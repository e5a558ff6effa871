"""Text tokens: tiktoken with special tokens read as plain text, and a bounded memo.

The agent loop re-estimates the same conversation every round with one more message, so
counting each distinct string once (per encoding) turns an O(conversation) re-tokenization
into dictionary look-ups.
"""

from __future__ import annotations

from functools import lru_cache

from ._encoding import encoding_for_model, get_encoding

__all__ = ["count_text_tokens", "encoded_len"]

# Strings longer than this are not memoized: they are rare, and would pin a lot of memory.
_MEMO_MAX_CHARS = 20_000


@lru_cache(maxsize=65_536)
def _memo_len(encoding: str, text: str) -> int:
    return len(get_encoding(encoding).encode_ordinary(text))


def encoded_len(encoding: str, text: str) -> int:
    """Tokens of ``text`` in ``encoding``; "<|endoftext|>" and friends count as ordinary text."""
    if not text:
        return 0
    if len(text) > _MEMO_MAX_CHARS:
        return len(get_encoding(encoding).encode_ordinary(text))
    return _memo_len(encoding, text)


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model`` (unknown models use o200k_base)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return encoded_len(encoding_for_model(model).name, text)
