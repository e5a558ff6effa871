"""TokenCounter.estimate against a real local HTTP server: ranged reads, cache, timeout, allowlist."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from code_interpreter import tokens

from .conftest import ImageServer
from .images import data_url, png
from .test_discord import EXPIRES, ISSUED, discord_url


def image_msg(*urls: str, detail: str = "high") -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is in these images?"}]
    parts += [{"type": "image_url", "image_url": {"url": u, "detail": detail}} for u in urls]
    return [{"role": "user", "content": parts}]


def counter(**kw: Any) -> tokens.TokenCounter:
    kw.setdefault("image_hosts", ("127.0.0.1",))
    kw.setdefault("prices_file", None)
    return tokens.TokenCounter(**kw)


async def test_ranged_read_sizes_every_format(image_server: ImageServer) -> None:
    c = counter()
    paths = {"/a.png": (1024, 1024), "/b.jpg": (2048, 4096), "/c.gif": (300, 200), "/d.webp": (640, 480)}
    est = await c.estimate("gpt-4o", image_msg(*(image_server.url(p) for p in paths)))
    assert est.warnings == ()
    assert [(i.width, i.height, i.source) for i in est.images] == [(*s, "http") for s in paths.values()]
    assert est.image_tokens == sum(tokens.image_tokens(*s, "gpt-4o", "high") for s in paths.values())
    for p in paths:
        (hit,) = image_server.hits_for(p)
        assert hit.range == "bytes=0-4095" and hit.status == 206
        assert hit.bytes_sent <= 4096
    # The JPEG is 200 KB; we read 4 KB of it.
    assert sum(h.bytes_sent for h in image_server.hits) <= 4 * 4096


async def test_jpeg_with_big_exif_needs_one_more_small_range(image_server: ImageServer) -> None:
    est = await counter().estimate("gpt-4.1-mini", image_msg(image_server.url("/exif.jpg")))
    assert (est.images[0].width, est.images[0].height) == (1800, 2400)
    hits = image_server.hits_for("/exif.jpg")
    assert [h.range for h in hits] == ["bytes=0-4095", "bytes=9024-13119"]  # where the SOF segment starts
    assert sum(h.bytes_sent for h in hits) <= 2 * 4096


async def test_second_estimate_is_served_from_the_cache(image_server: ImageServer) -> None:
    c = counter()
    msgs = image_msg(image_server.url("/a.png"), image_server.url("/a.png"))  # the same URL twice
    first = await c.estimate("gpt-4o", msgs)
    assert len(image_server.hits) == 1  # concurrent duplicates are looked up once
    second = await c.estimate("gpt-4o", msgs)
    assert len(image_server.hits) == 1  # no request at all
    assert [i.source for i in second.images] == ["cache", "cache"]
    assert second.input_tokens == first.input_tokens


class ToLoopback(httpx.AsyncBaseTransport):
    """Routes every request to the local server over a real socket (Discord's hosts, served locally)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_discord_cache_is_keyed_by_attachment_id(image_server: ImageServer) -> None:
    # A fresh link (new signature) to the same attachment needs no second request.
    now = ISSUED + timedelta(hours=1)
    c = counter(
        clock=lambda: now, image_hosts=("cdn.discordapp.com",), transport=ToLoopback(image_server.port)
    )
    first = await c.estimate(
        "gpt-4o", image_msg(discord_url(channel=111, attachment=222, filename="cat.png"))
    )
    assert (first.images[0].width, first.images[0].height, first.images[0].source) == (1600, 900, "http")
    (hit,) = image_server.hits
    assert hit.path.startswith("/attachments/111/222/cat.png?ex=") and hit.range == "bytes=0-4095"
    fresh = discord_url(
        channel=111, attachment=222, filename="cat.png", issued=now, expires=now + timedelta(days=1)
    )
    second = await c.estimate("gpt-4o", image_msg(fresh))
    assert second.images[0].source == "cache" and second.image_tokens == first.image_tokens
    assert len(image_server.hits) == 1
    # The media proxy's rendition of the same attachment: the cached original fitted into the box.
    proxy = discord_url(
        host="media.discordapp.net", attachment=222, filename="cat.png", extra="=&width=800&height=450"
    )
    third = await c.estimate("gpt-4o", image_msg(proxy))
    assert (third.images[0].width, third.images[0].height, third.images[0].source) == (800, 450, "cache")
    assert len(image_server.hits) == 1


async def test_registered_sizes_need_no_network(image_server: ImageServer) -> None:
    c = counter(clock=lambda: ISSUED)
    url = discord_url(attachment=555)
    c.register_image_size(555, 1024, 1024)
    c.register_image_size(image_server.url("/never-fetched.png"), 2048, 4096)
    est = await c.estimate("gpt-4o", image_msg(url, image_server.url("/never-fetched.png")))
    assert [(i.source, i.tokens) for i in est.images] == [("registered", 765), ("registered", 1105)]
    assert image_server.hits == []
    # A media-proxy rendition of a registered original: the original fitted into width x height.
    proxy = discord_url(host="media.discordapp.net", attachment=555, extra="=&width=400&height=400")
    est = await c.estimate("gpt-4o", image_msg(proxy))
    assert (est.images[0].width, est.images[0].height) == (400, 400)
    with pytest.raises(ValueError):
        c.register_image_size(555, 0, 10)
    with pytest.raises(ValueError):
        c.register_image_size(555, -3, 10)


async def test_expired_discord_link_is_counted_and_flagged(image_server: ImageServer) -> None:
    c = counter(clock=lambda: EXPIRES + timedelta(minutes=5), image_hosts=("cdn.discordapp.com",))
    url = discord_url(attachment=777)
    est = await c.estimate("gpt-4o", image_msg(url))
    assert est.images[0].source == "upper-bound"
    assert est.image_tokens == tokens.image_upper_bound("gpt-4o", "high")
    assert any("expired" in w and "API will fail" in w for w in est.warnings)
    c.register_image_size(777, 512, 512)
    est = await c.estimate("gpt-4o", image_msg(url))
    assert est.images[0].tokens == 255 and any("expired" in w for w in est.warnings)


async def test_stalling_server_times_out_quickly(image_server: ImageServer) -> None:
    c = counter(timeout_s=0.3)
    start = time.perf_counter()
    est = await c.estimate("gpt-4o-mini", image_msg(image_server.url("/stall")))
    elapsed = time.perf_counter() - start
    assert elapsed < 3  # generous on a loaded machine; the server would stall for 10 s
    assert est.images[0].source == "upper-bound"
    assert est.image_tokens == tokens.image_upper_bound("gpt-4o-mini", "high")
    assert any("timed out" in w for w in est.warnings)
    assert len(image_server.hits_for("/stall")) == 1


@pytest.mark.parametrize(("path", "needle"), [("/404.png", "HTTP 404"), ("/page.html", "does not serve")])
async def test_404_and_non_images_warn(image_server: ImageServer, path: str, needle: str) -> None:
    est = await counter().estimate("gpt-4o", image_msg(image_server.url(path)))
    assert est.images[0].source == "upper-bound"
    assert any(needle in w for w in est.warnings), est.warnings


async def test_host_not_on_the_allowlist_is_never_requested(image_server: ImageServer) -> None:
    # "localhost" reaches the same server, but only "127.0.0.1" is allowed.
    est = await counter().estimate("gpt-4o", image_msg(image_server.url("/a.png", host="localhost")))
    assert image_server.hits == []
    assert est.images[0].source == "upper-bound"
    assert any("not on the image-host allowlist" in w for w in est.warnings)


async def test_redirect_to_a_host_off_the_allowlist_is_refused(image_server: ImageServer) -> None:
    est = await counter().estimate("gpt-4o", image_msg(image_server.url("/redirect/out/a.png")))
    assert [h.path for h in image_server.hits] == ["/redirect/out/a.png"]  # the target never requested
    assert any("redirect" in w for w in est.warnings)
    ok = await counter().estimate("gpt-4o", image_msg(image_server.url("/redirect/a.png")))
    assert ok.images[0].source == "http"


async def test_server_ignoring_range_is_cut_off(image_server: ImageServer) -> None:
    est = await counter().estimate("gpt-4o", image_msg(image_server.url("/norange.png")))
    assert (est.images[0].width, est.images[0].height) == (512, 512)
    assert image_server.hits_for("/norange.png")[0].status == 200


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/a.png",
        "gopher://127.0.0.1/",
        "http://user:pw@127.0.0.1/a.png",
        "http://127.0.0.1:notaport/a.png",
        "http:///a.png",
    ],
)
async def test_unsafe_urls_are_refused(image_server: ImageServer, url: str) -> None:
    est = await counter().estimate("gpt-4o", image_msg(url))
    assert est.images[0].source == "upper-bound"
    assert any("not fetched" in w for w in est.warnings)
    assert image_server.hits == []


async def test_default_allowlist_is_discord_only() -> None:
    c = tokens.TokenCounter()
    assert c.image_hosts == frozenset({"cdn.discordapp.com", "media.discordapp.net"})


async def test_low_detail_and_data_urls_need_no_network(image_server: ImageServer) -> None:
    est = await counter().estimate(
        "gpt-4o",
        [
            *image_msg(image_server.url("/a.png"), detail="low"),
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": data_url(png(2048, 4096))}}],
            },
        ],
    )
    assert [(i.source, i.tokens) for i in est.images] == [("detail-low", 85), ("data-url", 1105)]
    assert image_server.hits == []


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ("not-a-list-but-a-string-is-input", None),
        (42, "messages not counted"),
        ([{"content": "no role"}], "messages not counted"),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "…"}}]}],
            "input_audio",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
                }
            ],
            "data",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,hello"}}],
                }
            ],
            "base64",
        ),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "without a URL"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "max"}}],
                }
            ],
            "detail",
        ),
        ([{"role": "user", "content": {"weird": "shape"}}], "JSON text"),
    ],
)
async def test_bad_input_gives_warnings_not_exceptions(messages: Any, needle: str | None) -> None:
    est = await counter().estimate("gpt-4o", messages)
    if needle is None:
        assert est.input_tokens > 0 and est.warnings == ()
    else:
        assert any(needle in w for w in est.warnings), est.warnings


async def test_bad_tools_and_options_warn() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    est = await counter().estimate(
        "gpt-4o", msgs, tools="nope", tool_choice="sometimes", max_output_tokens=-5
    )
    assert any("tools not counted" in w for w in est.warnings)
    assert any("max_output_tokens" in w for w in est.warnings)
    tools_ok = [{"type": "function", "function": {"name": "f"}}]
    est = await counter().estimate("gpt-4o", msgs, tools=tools_ok, tool_choice="sometimes")
    assert any("tool_choice ignored" in w for w in est.warnings) and est.tool_tokens > 0
    est = await counter().estimate("gpt-4o", msgs, tools=[{"type": "web_search"}])
    assert any("built-in tool" in w for w in est.warnings) and est.tool_tokens == 0
    est = await counter().estimate("", msgs)
    assert est.input_tokens == 0 and any("model" in w for w in est.warnings)


async def test_estimate_costs_and_unknown_models() -> None:
    msgs = [{"role": "user", "content": "hello there"}]
    est = await counter().estimate("gpt-4o", msgs, max_output_tokens=1000)
    assert est.output_tokens == 1000
    assert est.cost_min_usd == pytest.approx(est.input_tokens * 2.5 / 1e6)
    assert est.cost_max_usd == pytest.approx(est.input_tokens * 2.5 / 1e6 + 1000 * 10 / 1e6)
    assert est.price_source and "openai.com" in est.price_source and est.price_date
    unknown = await counter().estimate("brand-new-model", msgs)
    assert unknown.cost_min_usd is None and unknown.cost_max_usd is None
    assert any("no price" in w for w in unknown.warnings)
    assert any("tiktoken" in w for w in unknown.warnings)
    d = est.to_dict()
    assert d["input_tokens"] == est.input_tokens and isinstance(d["warnings"], list)


async def test_estimate_equals_count_request_tokens_when_sizes_are_known(image_server: ImageServer) -> None:
    msgs = [*image_msg(data_url(png(1800, 2400))), {"role": "system", "content": "Be brief."}]
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    for model in ("gpt-4o", "gpt-4.1-mini", "gpt-5", "gpt-3.5-turbo"):
        est = await counter().estimate(model, msgs, tools=tools, tool_choice="none")
        assert est.input_tokens == tokens.count_request_tokens(model, msgs, tools, "none")
        assert est.input_tokens == est.text_tokens + est.image_tokens + est.tool_tokens


async def test_many_lookups_run_concurrently(image_server: ImageServer) -> None:
    # Eight distinct stalling URLs with a 0.5 s timeout: sequential would take 4 s.
    urls = [image_server.url(f"/stall?n={i}") for i in range(8)]
    start = time.perf_counter()
    est = await counter(timeout_s=0.5, max_concurrency=8).estimate("gpt-4o", image_msg(*urls))
    assert time.perf_counter() - start < 3.0
    assert len(est.images) == 8 and all(i.source == "upper-bound" for i in est.images)


def test_clock_default_is_utc_now() -> None:
    c = counter()
    assert abs((c.clock() - datetime.now(UTC)).total_seconds()) < 5
