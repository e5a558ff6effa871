"""Hints for errors that are well-known removals in pandas 2/3 and numpy 2 (code written for older releases).

Models learned pandas and numpy from years of code for older releases: ``df.applymap``, ``df.append``,
``resample('M')``, ``np.NaN``. The runtime has current releases, so such code fails, and the error
alone ("Invalid frequency: M") does not say the API moved. :func:`hint_for` matches the error's text
against a short table and returns one line naming the replacement; anything else gets no hint.
"""

from __future__ import annotations

import re

__all__ = ["REMOVALS", "hint_for"]

_PANDAS = "written for an older pandas"
_NUMPY = "written for an older numpy"

REMOVALS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), hint)
    for pattern, hint in (
        (
            r"'DataFrame' object has no attribute 'applymap'",
            f"{_PANDAS}: DataFrame.applymap was removed in pandas 3; use DataFrame.map",
        ),
        (
            r"'(?:DataFrame|Series)' object has no attribute 'append'",
            f"{_PANDAS}: DataFrame.append and Series.append were removed in pandas 2; use pd.concat([a, b])",
        ),
        (
            r"'Series' object has no attribute 'iteritems'",
            f"{_PANDAS}: Series.iteritems was removed in pandas 2; use Series.items",
        ),
        (
            r"Invalid frequency: (?:M|Q|Y|A|BM|BQ|BY|BA|SM|CBM)\b",
            f"{_PANDAS}: period-end frequency aliases were renamed in pandas 2.2/3: 'M' is 'ME', "
            "'Q' is 'QE', 'Y' (or 'A') is 'YE', 'BM' is 'BME' (e.g. df.resample('ME'))",
        ),
        (
            r"Invalid frequency: (?:H|BH|T|S|L|U|N)\b|invalid unit abbreviation: (?:H|T|S|L|U|N)\b",
            f"{_PANDAS}: time frequency aliases are lower case in pandas 3: 'h', 'min', 's', 'ms', 'us', "
            "'ns' (not 'H', 'T', 'S', 'L', 'U', 'N')",
        ),
        (
            r"fillna\(\) got an unexpected keyword argument 'method'",
            f"{_PANDAS}: fillna(method=...) was removed in pandas 3; use .ffill() or .bfill()",
        ),
        (
            r"unexpected keyword argument '(?:infer_datetime_format|squeeze|error_bad_lines|warn_bad_lines)'",
            f"{_PANDAS}: that argument was removed in pandas 2 (to_datetime infers formats itself; "
            "read_csv takes on_bad_lines='skip'; use .squeeze('columns') after reading)",
        ),
        (
            r"'(?:DataFrame|Series)' object has no attribute 'swapaxes'",
            f"{_PANDAS}: swapaxes was removed in pandas 3; use .T or .transpose()",
        ),
        (
            r"'Series' object has no attribute 'is_monotonic'",
            f"{_PANDAS}: Series.is_monotonic was removed in pandas 2; use is_monotonic_increasing",
        ),
        (
            r"'(?:Series|DataFrame|\w*GroupBy)' object has no attribute 'mad'",
            f"{_PANDAS}: mad() was removed in pandas 2; use (s - s.mean()).abs().mean()",
        ),
        (
            r"module 'pandas' has no attribute '(?:Int64Index|Float64Index|UInt64Index)'",
            f"{_PANDAS}: Int64Index and Float64Index were removed in pandas 2; use pd.Index(values)",
        ),
        (
            r"module 'numpy' has no attribute '(?:float|int|bool|object|str|complex|bool8)'",
            f"{_NUMPY}: the np.float/np.int/np.bool aliases are gone; use float, int, bool (or np.float64 …)",
        ),
        (
            r"module 'numpy' has no attribute '(?:product|cumproduct|in1d|trapz)'",
            f"{_NUMPY}: numpy 2 removed these aliases; use np.prod, np.cumprod, np.isin, np.trapezoid",
        ),
        (
            r"`np\.\w+` was removed in the NumPy 2\.0 release",
            f"{_NUMPY}: numpy 2 removed that alias; the error names its replacement",
        ),
    )
)


def hint_for(error: str) -> str | None:
    """A one-line hint when ``error`` (a traceback) is a well-known pandas/numpy removal, else None."""
    if not error:
        return None
    # The exception is at the end of a traceback; a long one is only searched near its end.
    tail = error[-4000:]
    for pattern, hint in REMOVALS:
        if pattern.search(tail):
            return hint
    return None
