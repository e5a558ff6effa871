"""Request-level counts: the pure ``count_*`` functions and the async :class:`TokenCounter`.

``count_request_tokens`` is sync and offline: images in ``data:`` URLs are sized locally, every
other image is counted at the model's upper bound. :meth:`TokenCounter.estimate` resolves those
sizes (registered, cache, ranged HTTP read on allowlisted hosts), prices the request, and turns
every bad input into a warning instead of an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ..settings import Settings
from ._discord import DiscordLink, parse_discord_url
from ._encoding import encoding_for_model
from ._headers import DataUrlError, data_url_size
from ._images import image_model, image_tokens, image_upper_bound
from ._messages import ImagePart, walk_messages
from ._prices import PriceTable, default_prices
from ._sizes import HeaderReader, ImageSize, SizeCache, gather_limited, normalize_hosts
from ._tools import SYSTEM_MERGE_SAVING, function_definitions, tools_tokens

__all__ = ["ImageCount", "TokenCounter", "TokenEstimate", "count_message_tokens", "count_request_tokens"]


def count_message_tokens(messages: Any, model: str) -> int:
    """Prompt tokens of ``messages`` for ``model``, the 3 reply-priming tokens included.

    Raises:
        ValueError: ``messages`` is not a list of role/content mappings (or Responses input items).
    """
    enc = encoding_for_model(model).name
    walk = walk_messages(messages, enc)
    return walk.text_tokens + sum(_offline_image(p, model)[0] for p in walk.images)


def count_request_tokens(model: str, messages: Any, tools: Any = None, tool_choice: Any = None) -> int:
    """What the API will report as ``usage.prompt_tokens`` for this Chat Completions request.

    Images whose size needs the network are counted at the model's upper bound (see TokenCounter).

    Raises:
        ValueError: malformed messages, tools or tool_choice.
    """
    enc = encoding_for_model(model).name
    funcs = function_definitions(tools)
    walk = walk_messages(messages, enc, pad_system=bool(funcs))
    total = walk.text_tokens + sum(_offline_image(p, model)[0] for p in walk.images)
    if funcs:
        total += tools_tokens(funcs, enc, tool_choice) - (SYSTEM_MERGE_SAVING if walk.has_system else 0)
    return total


def _offline_image(part: ImagePart, model: str) -> tuple[int, ImageSize | None, str | None]:
    """(tokens, size or None, warning) of an image without the network."""
    if image_model(model).kind == "tile" and part.detail == "low":
        return image_tokens(1, 1, model, "low"), None, None  # low detail costs the same at any size
    if part.url[:5].lower() == "data:":
        try:
            h = data_url_size(part.url)
        except DataUrlError as exc:
            return (
                image_upper_bound(model, part.detail),
                None,
                f"{part.where}: {exc}; counted at the upper bound",
            )
        size = ImageSize(h.width, h.height, "data-url")
        return image_tokens(h.width, h.height, model, part.detail), size, None
    return image_upper_bound(model, part.detail), None, None


@dataclass(frozen=True, slots=True)
class ImageCount:
    """How one image was counted."""

    where: str
    """Its place in the messages (messages[3].content[1])."""
    tokens: int
    """Billed tokens counted for it."""
    width: int | None
    """Width used, None when counted at the upper bound."""
    height: int | None
    """Height used, None when counted at the upper bound."""
    source: str
    """registered | cache | http | data-url | discord-proxy | detail-low | upper-bound."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """The prompt tokens and cost range of one model request, with what could not be known."""

    model: str
    """Model name as given."""
    encoding: str
    """tiktoken encoding used."""
    text_tokens: int
    """Message tokens without images (framing and reply priming included)."""
    image_tokens: int
    """Tokens of every image."""
    tool_tokens: int
    """Tokens of the tool definitions and tool_choice."""
    input_tokens: int
    """text + image + tool tokens: the expected usage.prompt_tokens."""
    output_tokens: int
    """Output allowance (max_output_tokens, 0 when not given)."""
    images: tuple[ImageCount, ...]
    """Per-image detail."""
    cost_min_usd: float | None
    """Input cost alone (no output, no cache discount); None without a price."""
    cost_max_usd: float | None
    """Input cost + the whole output allowance; None without a price."""
    price_source: str | None
    """Where the price came from."""
    price_date: str | None
    """Date of the price table."""
    warnings: tuple[str, ...]
    """Everything that made this an approximation, or that will fail at the API."""

    @property
    def images_at_upper_bound(self) -> int:
        """How many images were counted at the upper bound."""
        return sum(1 for i in self.images if i.source == "upper-bound")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        d = asdict(self)
        d["images"] = [i.to_dict() for i in self.images]
        d["warnings"] = list(self.warnings)
        return d


class TokenCounter:
    """Estimates prompt tokens and cost before a request, resolving image sizes (async)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        image_hosts: Iterable[str] | None = None,
        timeout_s: float = 2.0,
        connect_timeout_s: float = 1.0,
        max_header_bytes: int = 4096,
        max_concurrency: int = 8,
        cache_size: int = 4096,
        prices_file: Path | str | None = None,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Args: hosts whose image headers may be read (default Settings.image_hosts), a total timeout per
        image look-up, the header bytes read, concurrent look-ups, cache entries, an operator price file
        (default Settings.prices_file), a clock for link expiry, and an httpx transport (tests, proxies)."""
        if settings is None and (image_hosts is None or prices_file is None):
            settings = Settings.from_env()
        hosts = image_hosts if image_hosts is not None else settings.image_hosts  # type: ignore[union-attr]
        self.image_hosts = normalize_hosts(hosts)
        if timeout_s <= 0 or connect_timeout_s <= 0 or max_header_bytes < 64 or max_concurrency < 1:
            raise ValueError("timeouts must be positive, max_header_bytes >= 64 and max_concurrency >= 1")
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.max_concurrency = max_concurrency
        self.reader = HeaderReader(self.image_hosts, max_bytes=max_header_bytes)
        self.cache = SizeCache(cache_size)
        self._registered: dict[str, tuple[int, int]] = {}
        chosen = prices_file if prices_file is not None else settings.prices_file if settings else None
        self.prices: PriceTable = default_prices(chosen)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._transport = transport

    # -- sizes ---------------------------------------------------------------
    def register_image_size(self, url_or_attachment_id: str | int, width: int, height: int) -> None:
        """Record a known size (e.g. from a Discord attachment object) for a URL or attachment id.

        Raises:
            ValueError: a non-positive or non-integer size.
        """
        image_tokens(width, height, "gpt-4o")  # validates the size with the same rules as counting
        self._registered[_key_for(url_or_attachment_id)] = (width, height)

    def _known(self, url: str, link: DiscordLink | None) -> ImageSize | None:
        tables = ((self._registered, "registered"), (self.cache, "cache"))
        if link is None:
            key = _key_for(url)
            for table, source in tables:
                if (hit := table.get(key)) is not None:
                    return ImageSize(hit[0], hit[1], source)
            return None
        key = f"discord:{link.attachment_id}"
        for table, source in tables:
            if link.width and link.height:
                # A proxy rendition: its size if read before, else the original fitted in width x height.
                hit = table.get(f"{key}:{link.width}x{link.height}")
                if hit is None and (orig := table.get(key)) is not None:
                    hit = _fit(orig, link.width, link.height)
            else:
                hit = table.get(key)
            if hit is not None:
                return ImageSize(hit[0], hit[1], source)
        return None

    def _local(self, part: ImagePart, model: str, warnings: list[str]) -> ImageCount | None:
        """Count an image without the network, or None when a header read is worth trying."""
        tokens, size, warning = _offline_image(part, model)
        if warning:
            warnings.append(warning)
        if image_model(model).kind == "tile" and part.detail == "low":
            return ImageCount(part.where, tokens, None, None, "detail-low")
        if size is not None or not part.url or part.url[:5].lower() == "data:":
            src = size.source if size else "upper-bound"
            return ImageCount(
                part.where, tokens, size.width if size else None, size.height if size else None, src
            )
        link = parse_discord_url(part.url)
        expired = link is not None and link.is_expired(self.clock())
        if expired and link is not None:
            warnings.append(
                f"{part.where}: Discord link for attachment {link.attachment_id} expired at "
                f"{link.expires_at:%Y-%m-%d %H:%M:%S} UTC; the API will fail to fetch it: refresh it"
            )
        size = self._known(part.url, link)
        if size is None and not expired:
            return None
        return self._count(part, model, size, link)

    def _count(
        self, part: ImagePart, model: str, size: ImageSize | None, link: DiscordLink | None
    ) -> ImageCount:
        if size is None and link is not None and link.width and link.height:
            # The proxy serves at most width x height: a tighter bound than the model's maximum.
            size = ImageSize(link.width, link.height, "discord-proxy")
        if size is None:
            return ImageCount(part.where, image_upper_bound(model, part.detail), None, None, "upper-bound")
        tokens = image_tokens(size.width, size.height, model, part.detail)
        return ImageCount(part.where, tokens, size.width, size.height, size.source)

    async def _remote(
        self, client: httpx.AsyncClient, part: ImagePart, model: str, warnings: list[str]
    ) -> ImageCount:
        """Count an image after reading its header (allowlisted hosts only)."""
        link = parse_discord_url(part.url)
        size = self._known(part.url, link)  # an earlier look-up in this batch may have filled the cache
        if size is None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    size, why = await self.reader.size_of(client, part.url)
            except TimeoutError:
                size, why = None, "image header read timed out"
            if size is not None:
                key = _key_for(part.url)
                if link is not None and link.width and link.height:
                    key = f"{key}:{link.width}x{link.height}"
                self.cache.put(key, size.width, size.height)
            elif why:
                warnings.append(f"{part.where}: {why}; counted at the upper bound")
        return self._count(part, model, size, link)

    # -- estimate ------------------------------------------------------------
    async def estimate(
        self,
        model: str,
        messages: Any,
        tools: Any = None,
        tool_choice: Any = None,
        max_output_tokens: int | None = None,
    ) -> TokenEstimate:
        """Tokens and cost of a request before it is sent; bad input becomes warnings, never an exception."""
        warnings: list[str] = []
        try:
            info = encoding_for_model(model)
        except ValueError as exc:
            return self._empty(str(model), str(exc))
        if info.fallback:
            warnings.append(f"model {model!r} is not in tiktoken's tables; counted with {info.name}")
        if not image_model(model).known:
            warnings.append(f"model {model!r} has no image pricing entry; images counted as gpt-4o's")
        try:
            funcs = function_definitions(tools, warnings)
        except ValueError as exc:
            warnings.append(f"tools not counted: {exc}")
            funcs = []
        try:
            walk = walk_messages(messages, info.name, pad_system=bool(funcs))
        except ValueError as exc:
            return self._empty(str(model), f"messages not counted: {exc}", info.name, warnings)
        warnings.extend(walk.warnings)
        tool_tokens = 0
        if funcs:
            try:
                tool_tokens = tools_tokens(funcs, info.name, tool_choice)
            except ValueError as exc:
                warnings.append(f"tool_choice ignored: {exc}")
                tool_tokens = tools_tokens(funcs, info.name, None)
            tool_tokens -= SYSTEM_MERGE_SAVING if walk.has_system else 0
        images = await self._images(walk.images, model, warnings)
        image_total = sum(i.tokens for i in images)
        input_tokens = walk.text_tokens + image_total + tool_tokens
        output = 0
        if max_output_tokens is not None:
            if (
                isinstance(max_output_tokens, int)
                and not isinstance(max_output_tokens, bool)
                and max_output_tokens >= 0
            ):
                output = max_output_tokens
            else:
                warnings.append(
                    f"max_output_tokens {max_output_tokens!r} ignored: expected a non-negative int"
                )
        price = self.prices.price_for(model)
        if price is None:
            warnings.append(f"no price for model {model!r}; cost unknown (add it to the prices file)")
        return TokenEstimate(
            model=model,
            encoding=info.name,
            text_tokens=walk.text_tokens,
            image_tokens=image_total,
            tool_tokens=tool_tokens,
            input_tokens=input_tokens,
            output_tokens=output,
            images=tuple(images),
            cost_min_usd=price.cost(input_tokens) if price else None,
            cost_max_usd=price.cost(input_tokens, output) if price else None,
            price_source=self.prices.source if price else None,
            price_date=self.prices.as_of if price else None,
            warnings=tuple(warnings),
        )

    async def _images(self, parts: list[ImagePart], model: str, warnings: list[str]) -> list[ImageCount]:
        counts: list[ImageCount | None] = [self._local(p, model, warnings) for p in parts]
        pending = [i for i, c in enumerate(counts) if c is None]
        if pending:
            # The client is made only when a header must be read (it costs an SSL context).
            timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            async with httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, transport=self._transport
            ) as client:
                # One look-up per distinct URL; repeats are then answered from the cache.
                first: dict[str, int] = {}
                for i in pending:
                    first.setdefault(parts[i].url, i)
                lead = list(first.values())
                per: list[list[str]] = [[] for _ in lead]
                done = await gather_limited(
                    [self._remote(client, parts[i], model, per[k]) for k, i in enumerate(lead)],
                    self.max_concurrency,
                )
                for k, i in enumerate(lead):
                    counts[i] = done[k]
                    warnings.extend(per[k])
                for i in pending:
                    if counts[i] is None:
                        counts[i] = await self._remote(client, parts[i], model, warnings)
        return [c for c in counts if c is not None]

    def _empty(
        self, model: str, why: str, encoding: str = "", warnings: list[str] | None = None
    ) -> TokenEstimate:
        return TokenEstimate(
            model, encoding, 0, 0, 0, 0, 0, (), None, None, None, None, (*(warnings or []), why)
        )


def _key_for(url_or_id: str | int) -> str:
    if isinstance(url_or_id, int) and not isinstance(url_or_id, bool):
        return f"discord:{url_or_id}"
    if isinstance(url_or_id, str):
        s = url_or_id.strip()
        if s.isdigit():
            return f"discord:{int(s)}"
        link = parse_discord_url(s)
        if link is not None:
            return f"discord:{link.attachment_id}"
        return s
    raise ValueError(f"expected a URL or a Discord attachment id, got {url_or_id!r}")


def _fit(size: tuple[int, int], max_w: int, max_h: int) -> tuple[int, int]:
    w, h = size
    scale = min(max_w / w, max_h / h, 1.0)
    return max(1, round(w * scale)), max(1, round(h * scale))
