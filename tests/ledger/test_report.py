"""The HTML usage report, written by ``code-interpreter usage --html``, rendered in a real headless Chromium.

Chromium runs with the flags CI uses and is driven over the DevTools protocol on a pipe
(tests/_chromium.py): the page must load with no console error, no exception and no request
beyond the file itself; the charts must be in the DOM with one bar per figure; and screenshots of
each chart must show its bars drawn in their colours (decoded by tests/_png.py). The last tests show
that these checks catch a broken page, and that a missing Chromium fails the test, never skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from _chromium import Browser, Page, chromium_binary
from _png import Image, decode
from _process_env import process_env
from code_interpreter import tokens
from code_interpreter.ledger import ComputePrices, ExecutionUsage
from code_interpreter.ledger._report import KIND_COLOURS
from code_interpreter.ledger._svg import PALETTE
from code_interpreter.tokens import UsageStore

HOSTILE = "<img src=x onerror=alert(1)>"  # a user id is host data: it must show as text, never run
USERS = (7, "alice", HOSTILE)
DAYS = 5


async def _fill(uri: str, db_name: str) -> dict[str, Any]:
    """Five days of usage by three users on two models; returns what the charts must show."""
    now = [datetime(2026, 11, 28, 9, 0, tzinfo=UTC)]
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri, tz_aware=True)
    prices = ComputePrices(cpu_hour_usd=3.6, memory_gb_hour_usd=0.36, storage_gb_month_usd=0.0)
    counter = tokens.TokenCounter(image_hosts=(), prices_file=None)
    user_bars = kind_bars = 0
    try:
        store = UsageStore(client[db_name], clock=lambda: now[0], compute_prices=prices)
        for day in range(DAYS):
            for i, user in enumerate(USERS[: 1 + day % 3]):
                model, delta = ("gpt-4o", 5) if i % 2 == 0 else ("gpt-4o-mini", -3)  # over / under
                est = await counter.estimate(model, [{"role": "user", "content": f"day {day} user {i}"}])
                rid = await store.record_usage(user_id=user, model=model, estimate=est)
                usage = {"prompt_tokens": est.input_tokens - delta, "completion_tokens": 50}
                await store.record_usage(user_id=user, model=model, usage=usage, request_id=rid)
                await store.record_execution(
                    ExecutionUsage(
                        user_id=user,
                        cpu_seconds=3.0 + day,
                        peak_memory_mb=512.0,
                        wall_seconds=4.0,
                        request_id=rid,
                    )
                )
                user_bars += 1
            kind_bars += 2
            now[0] += timedelta(days=1)
        await store.close()
    finally:
        await client.close()
    return {"cost-by-user": user_bars, "cost-by-kind": kind_bars, "estimate-error": 2}


def _cli_report(tmp_path: Path, env: dict[str, str]) -> Path:
    out = tmp_path / "report" / "usage.html"
    out.parent.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "code_interpreter.cli", "usage", "--html", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _chart_boxes(page: Page) -> dict[str, dict[str, float]]:
    """Each chart's plot, in page coordinates (for a clipped screenshot)."""
    script = """JSON.stringify(Object.fromEntries(
        [...document.querySelectorAll('figure.chart svg.plot')].map(s => {
            const r = s.getBoundingClientRect();
            const box = {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height};
            return [s.closest('figure').id, box];
        })))"""
    return dict(json.loads(page.evaluate(script)))


def _palette_in(image: Image, colours: list[str], least: int = 150) -> list[str]:
    """The colours of ``colours`` that fill at least ``least`` pixels of ``image``."""
    return [c for c in colours if image.count_near(c) >= least]


async def test_the_report_renders_in_a_headless_browser(
    tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any
) -> None:
    expected_bars = await _fill(mongo_uri, db_name)
    report = _cli_report(tmp_path, process_env(tmp_path / "home", mongo_uri, db_name, sandbox_runtime.root))
    url = report.as_uri()
    with Browser(tmp_path / "profile", width=1000, height=900) as browser:
        page = browser.open(url)

        # It loaded cleanly, and fetched nothing but itself: no console error, no exception, no request.
        assert page.problems() == []
        assert page.requested_urls() == [url]

        # The charts are in the DOM, one bar per figure, and the hostile user id is text, not markup.
        dom = str(page.evaluate("document.documentElement.outerHTML"))
        for chart, bars in expected_bars.items():
            assert f'<figure class="chart" id="{chart}">' in dom
            assert page.evaluate(f"document.querySelectorAll('#{chart} svg.plot rect.bar').length") == bars
        assert page.evaluate("document.images.length") == 0 and page.evaluate("document.scripts.length") == 0
        assert HOSTILE in str(page.evaluate("document.getElementById('cost-by-user').textContent"))

        # Screenshots: the page is not blank, and each chart has its bars drawn in its colours.
        height = page.evaluate("document.documentElement.scrollHeight")
        whole = page.screenshot({"x": 0, "y": 0, "width": 1000, "height": height, "scale": 0.5})
        (tmp_path / "report.png").write_bytes(whole)
        full = decode(whole)
        assert full.drawn_fraction() > 0.05 and len(full.colours()) > 50
        boxes = _chart_boxes(page)
        assert set(boxes) == set(expected_bars)
        shots = {chart: decode(page.screenshot(box)) for chart, box in boxes.items()}
        kinds = list(KIND_COLOURS.values())
        assert _palette_in(shots["cost-by-kind"], kinds) == kinds  # tokens and sandbox both drawn
        user_colours = [PALETTE[(i + 2) % len(PALETTE)] for i in range(len(USERS))]
        assert _palette_in(shots["cost-by-user"], user_colours) == user_colours  # one colour per user
        assert _palette_in(shots["estimate-error"], ["#76b7b2", "#e15759"]) == ["#76b7b2", "#e15759"]
        for chart, shot in shots.items():
            assert shot.drawn_fraction() > 0.05, chart
    assert browser.stderr_console_lines() == []


def test_the_checks_catch_a_broken_page(tmp_path: Path) -> None:
    """The same checks on a page with a console error, an exception, a fetch and an empty chart."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><figure class='chart' id='empty'><svg class='plot' width='300' "
        "height='120'></svg></figure><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    with Browser(tmp_path / "profile") as browser:
        page = browser.open(broken.as_uri())
        problems = page.problems()
        assert any("console.error" in p and "boom" in p for p in problems), problems
        assert any("undefinedFunction" in p for p in problems), problems
        assert "http://127.0.0.1:9/x.png" in page.requested_urls()
        empty = decode(page.screenshot(_chart_boxes(page)["empty"]))
        assert empty.drawn_fraction() == 0 and _palette_in(empty, list(KIND_COLOURS.values())) == []
    assert any("boom" in line for line in browser.stderr_console_lines())


def test_a_missing_chromium_fails_the_test_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        chromium_binary()
