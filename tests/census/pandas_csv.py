"""pandas: CSV in and out, dates, groupby, merge, pivot, resample, rolling, describe."""

import io

import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
n = 5000
df = pd.DataFrame(
    {
        "date": pd.date_range("2024-01-01", periods=n, freq="h"),
        "region": rng.choice(["north", "south", "east", "west"], n),
        "units": rng.integers(1, 20, n),
        "price": rng.uniform(1, 50, n).round(2),
    }
)
df["revenue"] = df.units * df.price
df.to_csv("sales.csv", index=False)
back = pd.read_csv("sales.csv", parse_dates=["date"])
assert len(back) == n
by_region = back.groupby("region").agg(revenue=("revenue", "sum"), units=("units", "mean"))
regions = pd.DataFrame({"region": ["north", "south", "east", "west"], "manager": list("ABCD")})
merged = back.merge(regions, on="region", how="left")
pivot = merged.pivot_table(index=merged.date.dt.month, columns="region", values="revenue", aggfunc="sum")
monthly = back.set_index("date").revenue.resample("ME").sum()
rolling = back.set_index("date").revenue.rolling("7D").mean()
print(by_region.round(1))
print(pivot.shape, monthly.tail(2).round(1).to_dict(), round(float(rolling.iloc[-1]), 2))
print(back.describe().loc["mean"].drop("date", errors="ignore").to_dict())
buf = io.StringIO()
back.head(100).to_json(buf, orient="records", date_format="iso")
print(pd.read_json(io.StringIO(buf.getvalue())).shape)
back.to_csv("sales.csv.gz", index=False, compression="gzip")
print(len(pd.read_csv("sales.csv.gz")))
