"""Money as people read it: the precision an amount needs, never ``$0.00`` for a tenth of a cent."""

from __future__ import annotations

import math

__all__ = ["format_usd"]

# Below a dollar an amount keeps this many significant digits (0.0512 → $0.0512, 0.00123 → $0.00123).
_SIGNIFICANT = 3


def format_usd(amount: float) -> str:
    """Dollars with the precision the amount needs: ``$1,234.50``, ``$0.05``, ``$0.001``, ``$0.0000421``.

    A dollar or more is shown in cents; below a dollar, three significant digits (at least cents,
    trailing zeros past the cents dropped), so a small budget or cost is never rounded to ``$0.00``.
    """
    if not math.isfinite(amount):
        return f"${amount}"
    sign = "-" if amount < 0 else ""
    a = abs(float(amount))
    if a == 0:
        return "$0.00"
    if a >= 1:
        return f"{sign}${a:,.2f}"
    decimals = max(2, _SIGNIFICANT - 1 - math.floor(math.log10(a)))
    whole, frac = f"{a:.{decimals}f}".split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{frac}"
