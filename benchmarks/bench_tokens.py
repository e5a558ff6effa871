"""Token counting: estimate a 200-message conversation with 10 images and 5 tools.

Side by side with ``litellm.token_counter`` and ``tokencost`` when they are importable (optional:
``.venv/bin/pip install litellm tokencost``; never runtime dependencies). Both are run offline
(litellm with LITELLM_LOCAL_MODEL_COST_MAP=True). Images are data URLs, so nothing touches the
network. Two modes, every counter in each, and speed-ups only within a mode (like for like):

- from scratch: ours with a fresh memo and a fresh TokenCounter (no image-size cache) on every call,
  theirs as they are (neither keeps a per-string cache);
- agent loop: each call estimates the conversation so far plus one new message, as a bot does
  before each model request; ours keeps its memo between calls, theirs recount everything.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import random
import struct
import sys
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ._common import Table, summarize, time_async, time_sync

MODEL = "gpt-4o"
SCRATCH = "from scratch (fresh memo, no cache)"
LOOP = "agent loop (+1 message per call)"
OURS = "code_interpreter.tokens"
LITELLM = "litellm.token_counter"
TOKENCOST = "tokencost.count_message_tokens (no images, no tools)"
FLOOR = "tiktoken alone: encode_ordinary of the same texts (the floor)"
WORDS = [
    "data", "frame", "plot", "column", "mean", "median", "value", "error", "chart", "file", "upload",
    "sales", "region", "month", "total", "python", "code", "run", "result", "figure", "axis", "label",
    "table", "row", "index", "merge", "group", "filter", "sort", "average", "count", "sum", "max", "min",
    "the", "a", "of", "to", "in",
]  # fmt: skip


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def conversation(n: int = 200, images: int = 10, seed: int = 7) -> list[dict[str, Any]]:
    """A deterministic conversation: system, user/assistant turns, tool calls and results, images."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    sizes = [(800, 600), (1024, 1024), (1920, 1080), (640, 480), (2048, 4096)]
    msgs: list[dict[str, Any]] = [{"role": "system", "content": text(60)}]
    image_slots = set(range(5, n, max(1, n // images)))
    i = 1
    while len(msgs) < n:
        if i in image_slots and len([m for m in msgs if isinstance(m["content"], list)]) < images:
            w, h = sizes[i % len(sizes)]
            url = "data:image/png;base64," + base64.b64encode(_png(w, h)).decode()
            msgs.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text(20)},
                        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                    ],
                }
            )
        elif i % 2:
            msgs.append({"role": "user", "content": text(rng.randint(10, 80))})
        else:
            msgs.append({"role": "assistant", "content": text(rng.randint(30, 150))})
        i += 1
    return msgs[:n]


def tool_defs(k: int = 5) -> list[dict[str, Any]]:
    """Five function tools with enums and nested properties."""
    out = []
    for j in range(k):
        out.append(
            {
                "type": "function",
                "function": {
                    "name": f"tool_{j}",
                    "description": f"Run analysis step {j} over the user's uploaded files",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string", "description": "Python code to run"},
                            "mode": {"type": "string", "enum": ["fast", "full", "dry-run"]},
                            "options": {
                                "type": "object",
                                "properties": {
                                    "timeout": {"type": "integer"},
                                    "files": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        },
                        "required": ["code"],
                    },
                },
            }
        )
    return out


def _cookbook() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    from tokens.test_vectors import COOKBOOK_MESSAGES, COOKBOOK_TOOL_MESSAGES, COOKBOOK_TOOLS

    return COOKBOOK_MESSAGES, COOKBOOK_TOOL_MESSAGES, COOKBOOK_TOOLS


def _exact(fn: Any) -> str:
    """'yes' when ``fn(model, messages, tools)`` matches all 8 cookbook vectors, else what it got."""
    msgs, tmsgs, tools = _cookbook()
    cases: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None, int]] = [
        (m, msgs, None, e)
        for m, e in (("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124))
    ]
    cases += [
        (m, tmsgs, tools, e)
        for m, e in (("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101))
    ]
    got = []
    for model, m, t, expected in cases:
        try:
            n = fn(model, m, t)
        except Exception as exc:  # a library that cannot count this input
            n = f"error: {type(exc).__name__}"
        got.append((n, expected))
    ok = sum(1 for n, e in got if n == e)
    if ok == len(got):
        return "yes (8/8)"
    return f"no ({ok}/8; got {', '.join(str(n) for n, _ in got)})"


@dataclass
class Row:
    """One counter in one mode: its samples, the tokens it counted, whether it is exact on the cookbook."""

    mode: str
    counter: str
    samples: list[float]
    tokens: Any = "-"
    exact: str = "-"


def _loop_rounds(msgs: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """``n`` requests of an agent loop: each is the previous conversation plus one new message."""
    rng = random.Random(11)
    grown = [msgs]
    for j in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 150)))
        grown.append([*grown[-1], {"role": "assistant" if j % 2 else "user", "content": words}])
    return grown[1:]


def _text_only(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**m, "content": " ".join(p.get("text", "") for p in m["content"])}
        if isinstance(m["content"], list)
        else m
        for m in msgs
    ]


async def _ours(
    msgs: list[dict[str, Any]], tools: list[dict[str, Any]], rounds: list[Any], repeat: int
) -> list[Row]:
    from code_interpreter import tokens
    from code_interpreter.tokens._text import clear_memo

    def fresh() -> Any:
        return tokens.TokenCounter(image_hosts=(), prices_file=None)

    est = await fresh().estimate(MODEL, msgs, tools=tools)
    assert est.images_at_upper_bound == 0 and len(est.images) == 10, est
    exact = _exact(lambda mo, m, t: tokens.count_request_tokens(mo, m, t))
    counters = iter([fresh() for _ in range(repeat + 1)])  # built untimed; each used for one call

    async def scratch() -> Any:
        clear_memo()
        return await next(counters).estimate(MODEL, msgs, tools=tools)

    counter = fresh()
    loop = iter(rounds)

    async def agent_loop() -> Any:
        return await counter.estimate(MODEL, next(loop), tools=tools)

    cold = Row(SCRATCH, OURS, await time_async(scratch, repeat), est.input_tokens, exact)
    clear_memo()
    await counter.estimate(MODEL, msgs, tools=tools)  # the conversation so far was estimated last round
    first = (await fresh().estimate(MODEL, rounds[0], tools=tools)).input_tokens
    return [cold, Row(LOOP, OURS, await time_async(agent_loop, repeat), first, exact)]


def _floor(msgs: list[dict[str, Any]], tools: list[dict[str, Any]], repeat: int) -> Row:
    """tiktoken encoding the same texts, nothing else: the floor for any exact counter from scratch."""
    from code_interpreter.tokens._encoding import encoding_for_model, get_encoding
    from code_interpreter.tokens._tools import function_definitions, render_functions

    encode = get_encoding(encoding_for_model(MODEL).name).encode_ordinary
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in msgs]
    texts += [render_functions(function_definitions(tools))]
    return Row(SCRATCH, FLOOR, time_sync(lambda: sum(len(encode(t)) for t in texts), repeat))


def _litellm(
    msgs: list[dict[str, Any]], tools: list[dict[str, Any]], rounds: list[Any], repeat: int
) -> list[Row]:
    import litellm

    def count(m: list[dict[str, Any]]) -> int:
        return int(litellm.token_counter(model=MODEL, messages=m, tools=tools))  # type: ignore[arg-type]

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "may update over time" warnings
        exact = _exact(
            lambda mo, m, t: (
                litellm.token_counter(model=mo, messages=m, tools=t)
                if t
                else litellm.token_counter(model=mo, messages=m)
            )
        )
    loop = iter(rounds)
    return [
        Row(SCRATCH, LITELLM, time_sync(lambda: count(msgs), repeat), count(msgs), exact),
        Row(LOOP, LITELLM, time_sync(lambda: count(next(loop)), repeat), count(rounds[0]), exact),
    ]


def _tokencost(msgs: list[dict[str, Any]], rounds: list[Any], repeat: int, notes: list[str]) -> list[Row]:
    import tokencost

    def count(m: list[dict[str, Any]]) -> int:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a warning per call
            return int(tokencost.count_message_tokens(m, MODEL))

    try:
        count(msgs)
    except Exception as exc:
        notes.append(
            f"tokencost cannot count image parts ({type(exc).__name__}); timed with the images dropped."
        )

    def tc_exact(mo: str, m: Any, t: Any) -> Any:
        if t is not None:
            return "no tools input"
        with contextlib.redirect_stdout(io.StringIO()):
            return tokencost.count_message_tokens(m, mo)

    exact = _exact(tc_exact)
    text, text_rounds = _text_only(msgs), [_text_only(r) for r in rounds]
    loop = iter(text_rounds)
    return [
        Row(SCRATCH, TOKENCOST, time_sync(lambda: count(text), repeat), count(text), exact),
        Row(LOOP, TOKENCOST, time_sync(lambda: count(next(loop)), repeat), count(text_rounds[0]), exact),
    ]


async def run(quick: bool) -> list[Table]:
    """Median/p95 of estimating the conversation, ours vs litellm vs tokencost per mode, and exactness."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    repeat = 5 if quick else 30
    msgs, tools = conversation(), tool_defs()
    rounds = _loop_rounds(msgs, repeat + 1)  # one warm-up call, then ``repeat`` timed ones
    notes = [f"Conversation: {len(msgs)} messages, 10 data-URL images, 5 tools."]
    rows = await _ours(msgs, tools, rounds, repeat)
    rows.append(_floor(msgs, tools, repeat))
    try:
        rows += _litellm(msgs, tools, rounds, repeat)
        notes.append(f"litellm {metadata.version('litellm')} (LITELLM_LOCAL_MODEL_COST_MAP=True).")
    except Exception as exc:
        notes.append(f"litellm not measured: {type(exc).__name__}: {exc}")
    try:
        rows += _tokencost(msgs, rounds, repeat, notes)
    except Exception as exc:
        notes.append(f"tokencost not measured: {type(exc).__name__}: {exc}")

    table = Table(
        "Token estimate: 200 messages, 10 images, 5 tools",
        ["mode", "counter", "median ms", "p95 ms", "speed-up vs litellm, same mode", "prompt tokens",
         "exact on cookbook"],
    )  # fmt: skip
    for mode in (SCRATCH, LOOP):
        theirs = [summarize(r.samples)["median_ms"] for r in rows if r.mode == mode and r.counter == LITELLM]
        for r in (r for r in rows if r.mode == mode):
            s = summarize(r.samples)
            # tokencost counts a smaller input (no images, no tools): a ratio to it would not be like for like
            ratio = f"{theirs[0] / s['median_ms']:.1f}x" if theirs and r.counter != TOKENCOST else "-"
            table.rows.append([mode, r.counter, s["median_ms"], s["p95_ms"], ratio, r.tokens, r.exact])
    table.notes = [
        *notes,
        f"{SCRATCH}: our per-string memo cleared and a new TokenCounter (no image-size cache) for every "
        "call; litellm and tokencost keep no per-string cache: every call of theirs is from scratch.",
        f"{LOOP}: call k estimates the conversation plus k new messages (10-150 words each), as a bot does "
        "before each model request; ours keeps its memo between calls, theirs recount everything. prompt "
        "tokens: the first of these requests.",
        "speed-up = litellm's median in the same mode / this row's median (higher is better); litellm "
        "counts the same input, images and tools included. tokencost counts the text only, so it has none.",
    ]
    return [table]
