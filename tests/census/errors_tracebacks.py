"""Code that fails: a traceback through pandas, warnings, and an uncaught error at the end."""

import warnings

import pandas as pd

warnings.warn("a user warning", stacklevel=1)
try:
    pd.DataFrame({"a": [1]}).loc[:, "missing"]
except KeyError as exc:
    print("caught", type(exc).__name__)
try:
    with open("/mnt/inputs/nope.csv") as fh:
        fh.read()
except FileNotFoundError as exc:
    print("caught", exc.errno)
raise ValueError("the census's deliberate error")
