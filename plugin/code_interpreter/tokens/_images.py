"""Image tokens: tile models (base + tiles of 512 px) and patch models (32-px patches x multiplier).

The per-model constants live in ``data/image_models.json`` because OpenAI's published and
billed figures differ for some models (gpt-5-mini/nano bill 1.2/1.5 where the guide prints
1.62/2.46); the table keeps both and counts what ``usage.prompt_tokens`` reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from ._encoding import normalize_model

__all__ = [
    "MAX_PATCHES",
    "ImageModel",
    "image_model",
    "image_tokens",
    "image_upper_bound",
    "patch_count",
]

MAX_PATCHES = 1536
PATCH = 32
TILE = 512
FIT_BOX = 2048
SHORT_SIDE = 768
# Most 512-px tiles a high-detail image can need: shortest side <= 768 (2 tiles), longest <= 2048 (4).
MAX_TILES = 8

Detail = Literal["auto", "low", "high"]
_DETAILS = ("auto", "low", "high")


@dataclass(frozen=True, slots=True)
class ImageModel:
    """How one model family bills images."""

    key: str
    """Table entry that matched (a model-name prefix)."""
    kind: Literal["tile", "patch"]
    """Tile (base + per-512px-tile) or patch (32-px patches x multiplier) accounting."""
    base: int = 0
    """Tile models: tokens of every image (all of a low-detail image)."""
    tile: int = 0
    """Tile models: tokens per 512-px tile at high detail."""
    multiplier: Fraction = Fraction(1)
    """Patch models: billed tokens per patch."""
    published_multiplier: Fraction = Fraction(1)
    """Patch models: the multiplier OpenAI's guide prints (may differ from the billed one)."""
    max_patches: int = MAX_PATCHES
    """Patch models: the patch budget before the multiplier."""
    known: bool = True
    """False when the model is not in the table and the default family was assumed."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "key": self.key,
            "kind": self.kind,
            "base": self.base,
            "tile": self.tile,
            "multiplier": float(self.multiplier),
            "published_multiplier": float(self.published_multiplier),
            "max_patches": self.max_patches,
            "known": self.known,
        }


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    raw = resources.files("code_interpreter").joinpath("data", "image_models.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def _entry(key: str, known: bool = True) -> ImageModel:
    table = _table()
    if key in table["tile"]:
        e = table["tile"][key]
        return ImageModel(key, "tile", base=int(e["base"]), tile=int(e["tile"]), known=known)
    e = table["patch"][key]
    return ImageModel(
        key,
        "patch",
        multiplier=Fraction(str(e["multiplier"])),
        published_multiplier=Fraction(str(e["published"])),
        max_patches=int(e["max_patches"]),
        known=known,
    )


@lru_cache(maxsize=1024)
def image_model(model: str) -> ImageModel:
    """The image accounting of ``model`` (longest table prefix; unknown models count as gpt-4o)."""
    name = normalize_model(model)
    if name.startswith("ft:"):
        name = name.split(":")[1]
    table = _table()
    best = ""
    for key in (*table["tile"], *table["patch"]):
        if (name == key or name.startswith(key + "-")) and len(key) > len(best):
            best = key
    if best:
        return _entry(best)
    return _entry(table["default"], known=False)


def _check_size(width: int, height: int) -> None:
    for label, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"image {label} must be an int, got {v!r}")
        if v <= 0:
            raise ValueError(f"image {label} must be positive, got {v}")


def patch_count(width: int, height: int, max_patches: int = MAX_PATCHES) -> int:
    """32-px patches an image costs on patch models, after the documented shrink, before the multiplier."""
    _check_size(width, height)
    if max_patches <= 0:
        raise ValueError(f"max_patches must be positive, got {max_patches}")
    patches = math.ceil(width / PATCH) * math.ceil(height / PATCH)
    if patches <= max_patches:
        return patches
    # The guide: scale to the budget keeping the aspect ratio, then shrink again so the width is a
    # whole number of patches (floor), and count the patches of the resulting integer-sized image.
    shrink = math.sqrt(max_patches * PATCH * PATCH / (width * height))
    w1, h1 = width * shrink, height * shrink
    shrink *= min(math.floor(w1 / PATCH) / (w1 / PATCH), math.floor(h1 / PATCH) / (h1 / PATCH))
    w2, h2 = max(1, int(width * shrink)), max(1, int(height * shrink))
    return min(max_patches, math.ceil(w2 / PATCH) * math.ceil(h2 / PATCH))


def _tiles(width: int, height: int) -> int:
    w, h = float(width), float(height)
    if max(w, h) > FIT_BOX:
        scale = FIT_BOX / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > SHORT_SIDE:
        scale = SHORT_SIDE / min(w, h)
        w, h = w * scale, h * scale
    # Billing rounds the resized sides to whole pixels (measured: 2049x513 -> 8 tiles, 2050x513 -> 4).
    return math.ceil(round(w) / TILE) * math.ceil(round(h) / TILE)


def _check_detail(detail: str) -> str:
    if detail not in _DETAILS:
        raise ValueError(f"detail must be one of {', '.join(_DETAILS)}, got {detail!r}")
    return detail


def image_tokens(width: int, height: int, model: str, detail: str = "auto") -> int:
    """Billed tokens of one image of ``width`` x ``height`` pixels for ``model`` (``auto`` counts as high)."""
    _check_size(width, height)
    _check_detail(detail)
    m = image_model(model)
    if m.kind == "patch":
        return math.ceil(patch_count(width, height, m.max_patches) * m.multiplier)
    if detail == "low":
        return m.base
    return m.base + m.tile * _tiles(width, height)


def image_upper_bound(model: str, detail: str = "auto") -> int:
    """The most tokens one image can cost on ``model``: what an image of unknown size is counted at."""
    _check_detail(detail)
    m = image_model(model)
    if m.kind == "patch":
        return math.ceil(m.max_patches * m.multiplier)
    if detail == "low":
        return m.base
    return m.base + m.tile * MAX_TILES
