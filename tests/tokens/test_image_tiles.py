"""Tile counting for tall and wide images: the fit box and the short side apply to whichever side it is.

The vision guide's examples are square or portrait with a short side above 768 px, so a resize that
looked at the width (or the height) instead of the longest (shortest) side passed them all: a tall
1000x5000 screenshot was billed 16 tiles instead of 4, above the model's own upper bound. These pin
the algorithm on narrow images in both orientations.
"""

from __future__ import annotations

import pytest

from code_interpreter import tokens

BASE, TILE = 85, 170  # gpt-4o


@pytest.mark.parametrize(
    ("width", "height", "tiles"),
    [
        (500, 1000, 2),  # short side under 768: not scaled up; 1 x 2 tiles
        (1000, 500, 2),
        (1000, 5000, 4),  # fit: 409.6 x 2048 (short side already under 768) -> 1 x 4
        (5000, 1000, 4),
        (700, 4000, 4),  # fit: 358.4 x 2048 -> 1 x 4
        (4000, 700, 4),
        (1000, 3000, 8),  # fit: 682.7 x 2048, rounded to 683 -> 2 x 4
        (3000, 1000, 8),
        (600, 1500, 6),  # nothing to resize: 2 x 3
        (1500, 600, 6),
    ],
)
def test_narrow_images_in_both_orientations(width: int, height: int, tiles: int) -> None:
    assert tokens.image_tokens(width, height, "gpt-4o", "high") == BASE + TILE * tiles


SIDES = (1, 100, 511, 512, 513, 700, 767, 768, 769, 1000, 1536, 2047, 2048, 2049, 3000, 5000, 12_000)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "o3", "gpt-5"])
def test_orientation_never_changes_the_count_and_the_upper_bound_holds(model: str) -> None:
    bound = tokens.image_upper_bound(model, "high")
    for w in SIDES:
        for h in SIDES:
            n = tokens.image_tokens(w, h, model, "high")
            assert n == tokens.image_tokens(h, w, model, "high"), (w, h)
            assert n <= bound, (w, h, n, bound)
