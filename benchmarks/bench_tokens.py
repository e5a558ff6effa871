"""Token counting: estimate a 200-message conversation with 10 images and 5 tools.

Side by side with ``litellm.token_counter`` and ``tokencost`` when they are importable (optional:
``.venv/bin/pip install litellm tokencost``; never runtime dependencies). Both are run offline
(litellm with LITELLM_LOCAL_MODEL_COST_MAP=True). Images are data URLs, so nothing touches the
network. "cold" clears our per-string memo before every call; "warm" re-estimates the same
conversation; "agent loop" estimates the conversation so far plus one new message each call, as a bot
does before each model request.
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
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ._common import Table, summarize, time_async, time_sync

MODEL = "gpt-4o"
LOOP = "code_interpreter.tokens (agent loop: +1 new message each call)"
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


async def run(quick: bool) -> list[Table]:
    """Median/p95 of estimating the conversation, ours vs litellm vs tokencost, and exactness."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from code_interpreter import tokens
    from code_interpreter.tokens._text import clear_memo

    repeat = 5 if quick else 30
    msgs, tools = conversation(), tool_defs()
    counter = tokens.TokenCounter(image_hosts=(), prices_file=None)
    est = await counter.estimate(MODEL, msgs, tools=tools)
    assert est.images_at_upper_bound == 0 and len(est.images) == 10, est

    async def ours_cold() -> Any:
        clear_memo()
        return await counter.estimate(MODEL, msgs, tools=tools)

    async def ours_warm() -> Any:
        return await counter.estimate(MODEL, msgs, tools=tools)

    # The agent loop: each request carries the conversation so far plus one new message.
    rng = random.Random(11)
    grown = [msgs]
    for j in range(repeat + 2):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 150)))
        grown.append([*grown[-1], {"role": "assistant" if j % 2 else "user", "content": words}])
    rounds = iter(grown[1:])

    async def ours_loop() -> Any:
        return await counter.estimate(MODEL, next(rounds), tools=tools)

    rows: list[list[Any]] = []
    results: dict[str, dict[str, float]] = {}
    notes = [
        f"Conversation: {len(msgs)} messages, 10 data-URL images, 5 tools; "
        f"our count {est.input_tokens} tokens."
    ]
    results["code_interpreter.tokens (cold memo)"] = summarize(await time_async(ours_cold, repeat))
    results["code_interpreter.tokens (warm)"] = summarize(await time_async(ours_warm, repeat))
    clear_memo()
    await counter.estimate(MODEL, msgs, tools=tools)  # the conversation so far was estimated last round
    results[LOOP] = summarize(await time_async(ours_loop, repeat))
    # The floor for any exact counter: tiktoken encoding the same texts, nothing else.
    from code_interpreter.tokens._encoding import encoding_for_model, get_encoding
    from code_interpreter.tokens._tools import function_definitions, render_functions

    encode = get_encoding(encoding_for_model(MODEL).name).encode_ordinary
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in msgs]
    texts += [render_functions(function_definitions(tools))]
    results[FLOOR] = summarize(time_sync(lambda: sum(len(encode(t)) for t in texts), repeat))
    exact = {
        "code_interpreter.tokens (cold memo)": _exact(lambda mo, m, t: tokens.count_request_tokens(mo, m, t)),
    }
    exact["code_interpreter.tokens (warm)"] = exact[LOOP] = exact["code_interpreter.tokens (cold memo)"]
    counts = {
        "code_interpreter.tokens (cold memo)": est.input_tokens,
        "code_interpreter.tokens (warm)": est.input_tokens,
        LOOP: "+1 message",
    }

    try:
        import litellm

        def lite() -> int:
            return int(litellm.token_counter(model=MODEL, messages=msgs, tools=tools))  # type: ignore[arg-type]

        counts["litellm.token_counter"] = lite()
        results["litellm.token_counter"] = summarize(time_sync(lite, repeat))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "may update over time" warnings
            exact["litellm.token_counter"] = _exact(
                lambda mo, m, t: (
                    litellm.token_counter(model=mo, messages=m, tools=t)
                    if t
                    else litellm.token_counter(model=mo, messages=m)
                )
            )
        notes.append(f"litellm {metadata.version('litellm')} (LITELLM_LOCAL_MODEL_COST_MAP=True).")
    except Exception as exc:
        notes.append(f"litellm not measured: {type(exc).__name__}: {exc}")

    try:
        import tokencost

        text_only = [
            {**m, "content": " ".join(p.get("text", "") for p in m["content"])}
            if isinstance(m["content"], list)
            else m
            for m in msgs
        ]

        def tc() -> int:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints a warning per call
                return int(tokencost.count_message_tokens(text_only, MODEL))

        try:
            tokencost.count_message_tokens(msgs, MODEL)
        except Exception as exc:
            notes.append(
                f"tokencost cannot count image parts ({type(exc).__name__}); timed with the images dropped."
            )
        name = "tokencost.count_message_tokens (no images, no tools)"
        counts[name] = tc()
        results[name] = summarize(time_sync(tc, repeat))

        def tc_exact(mo: str, m: Any, t: Any) -> Any:
            if t is not None:
                return "no tools input"
            with contextlib.redirect_stdout(io.StringIO()):
                return tokencost.count_message_tokens(m, mo)

        exact[name] = _exact(tc_exact)
    except Exception as exc:
        notes.append(f"tokencost not measured: {type(exc).__name__}: {exc}")

    others = [v["median_ms"] for k, v in results.items() if k.startswith(("litellm", "tokencost"))]
    fastest_other = min(others) if others else None
    for name, r in results.items():
        ratio = fastest_other / r["median_ms"] if fastest_other else None
        rows.append(
            [
                name,
                r["median_ms"],
                r["p95_ms"],
                f"{ratio:.1f}x" if ratio else "-",
                counts.get(name, "-"),
                exact.get(name, "-"),
            ]
        )
    notes.append("speed-up = the faster other library's median / this row's median (higher is better).")
    return [
        Table(
            "Token estimate: 200 messages, 10 images, 5 tools",
            [
                "counter",
                "median ms",
                "p95 ms",
                "speed-up vs faster other",
                "prompt tokens",
                "exact on cookbook",
            ],
            rows,
            notes,
        )
    ]
