"""File formats: xlsx (openpyxl), parquet and feather (pyarrow), JSON, pickle, images (Pillow)."""

import json
import pickle

import numpy as np
import pandas as pd

df = pd.DataFrame({"a": range(100), "b": np.linspace(0, 1, 100), "c": ["x", "y"] * 50})
try:
    df.to_excel("table.xlsx", index=False, sheet_name="data")
    print(pd.read_excel("table.xlsx", sheet_name="data").shape)
except ImportError:
    print("openpyxl not installed")
try:
    df.to_parquet("table.parquet")
    print(pd.read_parquet("table.parquet").shape)
    df.to_feather("table.feather")
    print(pd.read_feather("table.feather").shape)
except ImportError:
    print("pyarrow not installed")
with open("data.json", "w") as fh:
    json.dump({"rows": df.head(3).to_dict("records")}, fh)
with open("data.json") as fh:
    print(json.load(fh)["rows"][0])
with open("df.pkl", "wb") as fh:
    pickle.dump(df, fh)
print(pd.read_pickle("df.pkl").equals(df))
try:
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(img).rectangle([10, 10, 90, 90], fill="red")
    img.filter(ImageFilter.GaussianBlur(2)).save("img.png")
    img.convert("L").resize((50, 25)).save("small.jpg", quality=80)
    back = Image.open("img.png")
    print(back.size, np.asarray(back).mean().round(1))
except ImportError:
    print("Pillow not installed")
