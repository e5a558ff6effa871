"""The usage report: one self-contained HTML file with charts of cost and of the token estimates' error.

Charts: cost per UTC day by user, cost per day by kind (tokens against sandbox), and per model the
estimated input tokens' error against what the API reported. Inline SVG and CSS only; a Content
Security Policy forbids every fetch, so the file renders the same offline, from a mail attachment
or a dashboard's static folder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from ._money import format_usd
from ._svg import PALETTE, signed_bars, stacked_bars

__all__ = ["KIND_COLOURS", "MAX_USERS", "render_report"]

MAX_USERS = 7
"""Users drawn by name in the per-user chart; the others are summed as "others"."""
KIND_COLOURS = {"tokens": PALETTE[0], "sandbox": PALETTE[1]}
"""The colours of the two kinds of cost."""
_OTHERS_COLOUR = "#bab0ac"
# Nothing may be fetched: no script, no font, no image; only the inline styles.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 8px; }
.meta { color: #555; font-size: 13px; margin: 0 0 20px; }
figure.chart { margin: 0 0 28px; padding: 12px 16px; border: 1px solid #e3e3e3; border-radius: 6px;
  width: max-content; }
figcaption { font-size: 12px; color: #555; margin-top: 6px; max-width: 760px; }
.legend { list-style: none; padding: 0; margin: 6px 0 0; font-size: 12px; display: flex; flex-wrap: wrap;
  gap: 14px; }
.swatch { display: inline-block; width: 11px; height: 11px; margin-right: 5px; vertical-align: -1px; }
.empty { color: #777; font-style: italic; }
table { border-collapse: collapse; font-size: 12px; margin: 0 0 28px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child, th.text, td.text { text-align: left; }
"""


def _legend(items: Sequence[tuple[str, str]]) -> str:
    cells = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{escape(name)}</li>' for name, c in items
    )
    return f'<ul class="legend">{cells}</ul>'


def _figure(chart_id: str, title: str, body: str, caption: str) -> str:
    return (
        f'<figure class="chart" id="{chart_id}"><h2>{escape(title)}</h2>{body}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _by_user(daily: Sequence[Mapping[str, Any]], days: list[str]) -> str:
    per_user: defaultdict[str, float] = defaultdict(float)
    for r in daily:
        per_user[str(r["user_id"])] += float(r["cost_usd"])
    ranked = sorted(per_user, key=lambda u: (-per_user[u], u))
    named, others = ranked[:MAX_USERS], set(ranked[MAX_USERS:])
    index = {d: i for i, d in enumerate(days)}
    values: dict[str, list[float]] = {u: [0.0] * len(days) for u in [*named, "others"]}
    for r in daily:
        user = str(r["user_id"])
        values["others" if user in others else user][index[str(r["day"])]] += float(r["cost_usd"])
    series = [(f"user {u}", PALETTE[(i + 2) % len(PALETTE)], values[u]) for i, u in enumerate(named)]
    if others:
        series.append((f"{len(others)} other users", _OTHERS_COLOUR, values["others"]))
    body = stacked_bars("cost-by-user", days, series) + _legend([(n, c) for n, c, _ in series])
    return _figure(
        "cost-by-user",
        "Cost per day by user",
        body,
        "Tokens and sandbox together, per UTC day; hover a bar for its figure.",
    )


def _by_kind(daily: Sequence[Mapping[str, Any]], days: list[str]) -> str:
    index = {d: i for i, d in enumerate(days)}
    tokens, sandbox = [0.0] * len(days), [0.0] * len(days)
    for r in daily:
        tokens[index[str(r["day"])]] += float(r["token_cost_usd"])
        sandbox[index[str(r["day"])]] += float(r["sandbox_cost_usd"])
    series = [
        ("tokens", KIND_COLOURS["tokens"], tokens),
        ("sandbox", KIND_COLOURS["sandbox"], sandbox),
    ]
    body = stacked_bars("cost-by-kind", days, series) + _legend(
        [
            ("tokens (model requests)", KIND_COLOURS["tokens"]),
            ("sandbox (CPU, memory, storage)", KIND_COLOURS["sandbox"]),
        ]
    )
    caption = f"In all: tokens {format_usd(sum(tokens))}, sandbox {format_usd(sum(sandbox))}."
    return _figure("cost-by-kind", "Cost per day by kind", body, caption)


def _estimate_error(models: Sequence[Mapping[str, Any]]) -> str:
    rows: list[tuple[str, float | None, str]] = []
    for m in models:
        measured, actual = int(m.get("measured") or 0), int(m.get("actual_input_tokens") or 0)
        name = str(m.get("model"))
        if not measured or not actual:
            rows.append((name, None, "no request with both an estimate and the API's usage"))
            continue
        percent = (int(m["estimated_input_tokens"]) - actual) / actual * 100
        mean_abs = float(m.get("input_abs_error") or 0) / measured
        rows.append((name, percent, f"{measured} measured, mean |err| {mean_abs:.1f} tokens"))
    if not rows:
        body = '<p class="empty">No model requests recorded.</p>'
    else:
        body = signed_bars("estimate-error", rows) + _legend(
            [("estimate above the actual tokens", "#76b7b2"), ("estimate below (under-counted)", "#e15759")]
        )
    caption = (
        "Estimated input tokens against the usage the API reported, over the requests that have both "
        "(sum of estimates - sum of actuals) / sum of actuals."
    )
    return _figure("estimate-error", "Token estimate error per model", body, caption)


def _table(daily: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>UTC day</th><th class='text'>user</th><th>tokens</th><th>sandbox</th><th>total</th></tr>"
    body = "".join(
        f"<tr><td>{escape(str(r['day']))}</td><td class='text'>{escape(str(r['user_id']))}</td>"
        f"<td>{format_usd(float(r['token_cost_usd']))}</td><td>{format_usd(float(r['sandbox_cost_usd']))}</td>"
        f"<td>{format_usd(float(r['cost_usd']))}</td></tr>"
        for r in daily
    )
    return f'<table id="daily-table">{head}{body}</table>'


def render_report(
    daily: Sequence[Mapping[str, Any]],
    models: Sequence[Mapping[str, Any]],
    *,
    generated_at: datetime,
    scope: str = "all users, all days",
    sources: Sequence[str] = (),
) -> str:
    """The HTML report from ``UsageStore.daily_costs`` rows and ``usage_summary(group_by="model")`` rows.

    Args:
        daily: ``{day, user_id, token_cost_usd, sandbox_cost_usd, cost_usd}`` rows.
        models: per-model rows with ``measured``, ``estimated_input_tokens``, ``actual_input_tokens``
            and ``input_abs_error``.
        generated_at: when the report was made (shown).
        scope: which users and days it covers (shown).
        sources: where the prices come from (shown under the charts).
    """
    days = sorted({str(r["day"]) for r in daily})
    if days:
        charts = _by_user(daily, days) + _by_kind(daily, days)
    else:
        charts = _figure(
            "cost-by-user", "Cost per day by user", '<p class="empty">No usage recorded.</p>', ""
        ) + _figure("cost-by-kind", "Cost per day by kind", '<p class="empty">No usage recorded.</p>', "")
    total = sum(float(r["cost_usd"]) for r in daily)
    notes = "".join(f"<li>{escape(s)}</li>" for s in sources)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Code interpreter usage</title><style>{_CSS}</style></head><body>"
        "<h1>Code interpreter usage</h1>"
        f"<p class='meta'>{escape(scope)} · {format_usd(total)} in all · generated "
        f"{escape(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</p>"
        f"{charts}{_estimate_error(models)}"
        f"<h2>Per day and user</h2>{_table(daily)}"
        f"<h2>Prices</h2><ul class='meta'>{notes}</ul>"
        "</body></html>\n"
    )
