"""Money printed with the precision it needs: a small budget is never shown as $0.00."""

from __future__ import annotations

import pytest

from code_interpreter.ledger import format_usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.00"),
        (0.001, "$0.001"),  # the case: a tenth of a cent, not $0.00
        (0.05, "$0.05"),
        (0.0512, "$0.0512"),
        (0.00123456, "$0.00123"),
        (0.0000421, "$0.0000421"),
        (1e-9, "$0.000000001"),
        (0.1, "$0.10"),
        (0.999, "$0.999"),
        (0.9996, "$1.00"),
        (1, "$1.00"),
        (12.5, "$12.50"),
        (1234.567, "$1,234.57"),
        (-0.002, "-$0.002"),
        (-3.5, "-$3.50"),
    ],
)
def test_format_usd(amount: float, shown: str) -> None:
    assert format_usd(amount) == shown


def test_no_non_zero_amount_prints_as_zero() -> None:
    for exponent in range(-12, 3):
        for mantissa in (1, 1.5, 4.99, 9.99):
            text = format_usd(mantissa * 10**exponent)
            assert text.strip("$0.,") != "", text
