"""Image tokens: the vision guide's examples exact, per-model constants, patch models, bad sizes."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from code_interpreter import tokens
from code_interpreter.tokens._images import image_model

from .images import data_url, gif, jpeg, png, webp_vp8, webp_vp8l, webp_vp8x


@pytest.mark.parametrize(
    ("width", "height", "detail", "expected"),
    [
        (1024, 1024, "high", 765),  # 768x768 -> 4 tiles: 85 + 4*170
        (2048, 4096, "high", 1105),  # -> 1024x2048 -> 768x1536 -> 6 tiles
        (4096, 8192, "low", 85),  # low is a fixed cost
        (1024, 1024, "auto", 765),  # auto counts as high
        (512, 512, "high", 255),  # no upscaling: one tile
        (100, 100, "high", 255),
    ],
)
def test_vision_guide_tile_examples(width: int, height: int, detail: str, expected: int) -> None:
    assert tokens.image_tokens(width, height, "gpt-4o", detail) == expected


def test_vision_guide_patch_examples() -> None:
    assert tokens.patch_count(1024, 1024) == 1024  # 32 x 32 patches, under the cap
    assert tokens.patch_count(1800, 2400) == 1452  # 57*75 = 4275 > 1536: shrink, then 33 x 44
    assert tokens.patch_count(2400, 1800) == 1452
    assert tokens.patch_count(10_000, 10_000) <= 1536
    assert tokens.patch_count(1, 1) == 1


@pytest.mark.parametrize(
    ("model", "base", "tile"),
    [
        ("gpt-4o", 85, 170),
        ("gpt-4.1", 85, 170),
        ("gpt-4.5-preview", 85, 170),
        ("gpt-4o-mini", 2833, 5667),
        ("gpt-4o-mini-2024-07-18", 2833, 5667),
        ("o1", 75, 150),
        ("o3", 75, 150),
        ("gpt-5", 70, 140),
        ("gpt-5-2025-08-07", 70, 140),
        ("computer-use-preview", 65, 129),
    ],
)
def test_tile_model_constants(model: str, base: int, tile: int) -> None:
    assert tokens.image_tokens(4096, 8192, model, "low") == base
    assert tokens.image_tokens(1024, 1024, model, "high") == base + 4 * tile
    # The upper bound: shortest side 768 (2 tiles) by longest 2048 (4 tiles).
    assert tokens.image_upper_bound(model, "high") == base + 8 * tile
    assert tokens.image_tokens(768, 2048, model, "high") == base + 8 * tile


@pytest.mark.parametrize(
    ("model", "multiplier"),
    [
        ("gpt-4.1-mini", 1.62),
        ("gpt-4.1-nano", 2.46),
        ("o4-mini", 1.72),
        ("gpt-5-mini", 1.2),
        ("gpt-5-nano", 1.5),
    ],
)
def test_patch_model_multipliers(model: str, multiplier: float) -> None:
    assert tokens.image_tokens(1024, 1024, model) == math.ceil(round(1024 * multiplier, 9))
    assert tokens.image_tokens(1800, 2400, model) == math.ceil(round(1452 * multiplier, 9))
    # Patch models ignore detail.
    assert tokens.image_tokens(1024, 1024, model, "low") == tokens.image_tokens(1024, 1024, model, "high")
    assert tokens.image_upper_bound(model) == math.ceil(round(1536 * multiplier, 9))


def test_published_and_billed_multipliers_differ_where_documented() -> None:
    table = json.loads(resources.files("code_interpreter").joinpath("data", "image_models.json").read_text())
    for name, entry in table["patch"].items():
        m = image_model(name)
        assert (
            float(m.multiplier) == entry["multiplier"] and float(m.published_multiplier) == entry["published"]
        )
    # The guide prints 1.62/2.46 for gpt-5-mini/nano; the API bills 1.2/1.5 (we count what is billed).
    assert (table["patch"]["gpt-5-mini"]["published"], table["patch"]["gpt-5-mini"]["multiplier"]) == (
        1.62,
        1.2,
    )
    assert (table["patch"]["gpt-5-nano"]["published"], table["patch"]["gpt-5-nano"]["multiplier"]) == (
        2.46,
        1.5,
    )


def test_measured_rounding_of_resized_sides() -> None:
    # Billed on gpt-4.1 (community.openai.com 1281361): 2049x513 -> 8 tiles, 2050x513 -> 4 tiles.
    assert tokens.image_tokens(2049, 513, "gpt-4.1", "high") == 85 + 8 * 170
    assert tokens.image_tokens(2050, 513, "gpt-4.1", "high") == 85 + 4 * 170


def test_unknown_model_counts_as_gpt_4o_and_is_flagged() -> None:
    assert tokens.image_tokens(1024, 1024, "some-future-model", "high") == 765
    assert not image_model("some-future-model").known
    assert image_model("gpt-4o").known


@pytest.mark.parametrize(
    ("width", "height"), [(0, 10), (10, 0), (-1, 10), (10, -5), (1.5, 10), (True, 10), ("10", 10)]
)
def test_bad_sizes_raise_value_error(width: object, height: object) -> None:
    with pytest.raises(ValueError, match=r"width|height"):
        tokens.image_tokens(width, height, "gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tokens.patch_count(width, height)  # type: ignore[arg-type]


def test_bad_detail_and_budget() -> None:
    with pytest.raises(ValueError, match="detail"):
        tokens.image_tokens(10, 10, "gpt-4o", "ultra")
    with pytest.raises(ValueError, match="max_patches"):
        tokens.patch_count(10, 10, max_patches=0)


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (png(1024, 1024), "image/png", (1024, 1024)),
        (jpeg(2048, 4096), "image/jpeg", (2048, 4096)),
        (jpeg(1800, 2400, exif_bytes=70_000), "image/jpeg", (1800, 2400)),  # SOF past the first 8 KB
        (gif(300, 200), "image/gif", (300, 200)),
        (webp_vp8x(640, 480), "image/webp", (640, 480)),
        (webp_vp8l(333, 222), "image/webp", (333, 222)),
        (webp_vp8(800, 600), "image/webp", (800, 600)),
    ],
)
def test_data_urls_are_sized_locally(data: bytes, mime: str, size: tuple[int, int]) -> None:
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(data, mime)}}]}]
    empty = tokens.count_message_tokens([{"role": "user", "content": []}], "gpt-4o")
    assert tokens.count_message_tokens(msg, "gpt-4o") == empty + tokens.image_tokens(*size, "gpt-4o")


def test_remote_images_count_at_the_upper_bound_offline() -> None:
    url = "https://example.com/x.png"
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini"):
        for detail in ("auto", "low"):
            msg = [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": url, "detail": detail}}],
                }
            ]
            empty = tokens.count_request_tokens(model, [{"role": "user", "content": []}])
            assert tokens.count_request_tokens(model, msg) == empty + tokens.image_upper_bound(model, detail)
