"""Fit what the model reads of a result's stdout and stderr into a token budget, head and tail kept.

The executor already caps each captured stream in *bytes* (``max_output_bytes``, 100 KB: about
25,000 tokens, several cents per call on a large model). The model only needs enough to continue,
so the text it reads is cut further to ``Settings.max_tool_output_tokens`` tokens of the model's own
tokenizer: the streams share the budget fairly (a short traceback is never cut to make room for a
flood of prints), each over-long stream keeps its head and tail, and a marker in its middle says how
many tokens and lines were cut. The host still gets the whole captured text in ``ToolResult.result`` (what
the sandbox kept: past ``max_output_bytes`` a stream's middle is dropped there, and the marker says so).

Small outputs cost nothing: a token is at least one byte, so text whose UTF-8 size is within the
budget is never tokenized.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import tiktoken

from ..tokens import encoding_for_model, ensure_offline_cache

__all__ = ["DEFAULT_ENCODING", "Cut", "encoding_for", "fit_streams"]

# The sandbox's marker where it dropped the middle of a stream over max_output_bytes (executor/_streams.py).
_DROPPED = re.compile(r"\[… ([\d,]+) bytes dropped here: [^\n]*?…\]")

DEFAULT_ENCODING = "o200k_base"
"""The tokenizer of every OpenAI chat model since gpt-4o: used when the model is unknown or not given."""


@dataclass(frozen=True, slots=True)
class Cut:
    """One stream as the model reads it, and what was cut from its middle."""

    text: str
    """The text shown: unchanged, or head + marker + tail."""
    cut_tokens: int = 0
    """Tokens of the removed middle, counted on its own with the model's tokenizer (0: nothing cut)."""
    cut_lines: int = 0
    """Line breaks in the removed middle."""
    kept_tokens: int | None = None
    """Tokens of head + tail (None when the stream was not tokenized)."""
    head_chars: int | None = None
    """Characters of the stream kept before the marker (None: nothing cut)."""
    tail_chars: int | None = None
    """Characters of the stream kept after the marker (None: nothing cut)."""


def encoding_for(model: str | None) -> tiktoken.Encoding:
    """The tiktoken encoding of ``model`` (o200k_base when it is None or unknown)."""
    name = DEFAULT_ENCODING
    if model:
        try:
            name = encoding_for_model(model).name
        except ValueError:
            name = DEFAULT_ENCODING
    ensure_offline_cache()
    return tiktoken.get_encoding(name)


def _utf8_len(text: str) -> int:
    # surrogatepass: a lone surrogate counts its 3 bytes, as tiktoken's U+FFFD replacement does.
    return len(text.encode("utf-8", "surrogatepass"))


def _shares(sizes: Sequence[int], budget: int) -> list[int]:
    """Max-min fair split of ``budget``: small streams keep all, the rest share what is left equally."""
    alloc = [0] * len(sizes)
    left = budget
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for k, i in enumerate(order):
        alloc[i] = min(sizes[i], left // (len(order) - k))
        left -= alloc[i]
    return alloc


def _prefix(enc: tiktoken.Encoding, text: str, tokens: Sequence[int]) -> str:
    """The longest prefix of ``text`` made of whole characters within ``tokens`` (a token prefix)."""
    # A token may end inside a multi-byte character: "ignore" drops that partial character.
    n = len(enc.decode_bytes(list(tokens)).decode("utf-8", "ignore"))
    return text[:n]


def _suffix(enc: tiktoken.Encoding, text: str, tokens: Sequence[int]) -> str:
    n = len(enc.decode_bytes(list(tokens)).decode("utf-8", "ignore"))
    return text[len(text) - n :] if n else ""


def _snap(head: str, tail: str) -> tuple[str, str]:
    """Cut at line breaks when one is near, so the model reads whole lines on both sides."""
    j = head.rfind("\n")
    if j >= 0 and j + 1 >= len(head) // 2:
        head = head[: j + 1]
    j = tail.find("\n")
    if 0 <= j < len(tail) // 2:
        tail = tail[j + 1 :]
    return head, tail


def _cut(enc: tiktoken.Encoding, text: str, tokens: list[int], allowed: int) -> Cut:
    """Keep at most ``allowed`` tokens of ``text``: its head and tail, a marker between them."""
    head_n, tail_n = allowed // 2, allowed - allowed // 2
    while True:
        head = _prefix(enc, text, tokens[:head_n])
        tail = _suffix(enc, text, tokens[len(tokens) - tail_n :] if tail_n else [])
        head, tail = _snap(head, tail)
        # Re-tokenized on their own, head and tail may differ by a token from the slices they came from.
        kept = len(enc.encode_ordinary(head)) + len(enc.encode_ordinary(tail))
        over = kept - allowed
        if over <= 0 or head_n + tail_n == 0:
            break
        head_n, tail_n = max(0, head_n - (over + 1) // 2), max(0, tail_n - over // 2 - 1)
    middle = text[len(head) : len(text) - len(tail)]
    cut_tokens = len(enc.encode_ordinary(middle))
    lines = middle.count("\n")
    what = f"{cut_tokens:,} tokens ({lines:,} lines)" if lines else f"{cut_tokens:,} tokens of one line"
    marker = f"… [{what} cut here; the application has them"
    lost = _DROPPED.search(middle)
    if lost:  # the sandbox's own marker went with the middle: say that those bytes exist nowhere
        marker += f", but not the {lost.group(1)} bytes dropped in the sandbox"
    marker += "] …"
    before = "" if not head or head.endswith("\n") else "\n"
    after = "\n" if tail else ""
    return Cut(f"{head}{before}{marker}{after}{tail}", cut_tokens, lines, kept, len(head), len(tail))


def fit_streams(streams: Sequence[str], budget: int, model: str | None = None) -> list[Cut]:
    """Fit ``streams`` (stdout, error, stderr …) into ``budget`` tokens together, fairly.

    Returns one :class:`Cut` per stream, in order. Streams are tokenized only when their UTF-8 size
    passes the budget.

    Raises:
        ValueError: ``budget`` is not a positive integer.
    """
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"the token budget must be a positive integer, got {budget!r}")
    # A token is at least one byte: within the budget in bytes means within it in tokens.
    if sum(len(s) for s in streams) <= budget and sum(_utf8_len(s) for s in streams) <= budget:
        return [Cut(s) for s in streams]
    enc = encoding_for(model)
    tokens = [enc.encode_ordinary(s) for s in streams]
    sizes = [len(t) for t in tokens]
    if sum(sizes) <= budget:
        return [Cut(s, kept_tokens=n) for s, n in zip(streams, sizes, strict=True)]
    out = []
    for s, toks, allowed in zip(streams, tokens, _shares(sizes, budget), strict=True):
        out.append(Cut(s, kept_tokens=len(toks)) if len(toks) <= allowed else _cut(enc, s, toks, allowed))
    return out
