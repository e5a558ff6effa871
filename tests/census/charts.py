"""matplotlib and seaborn: line, bar, scatter, histogram, heatmap; PNG, SVG and PDF files."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

rng = np.random.default_rng(2)
fig, axes = plt.subplots(2, 2, figsize=(8, 6))
axes[0, 0].plot(np.cumsum(rng.normal(size=200)))
axes[0, 1].bar(list("abcde"), rng.integers(1, 10, 5))
axes[1, 0].scatter(rng.normal(size=100), rng.normal(size=100), c=rng.uniform(size=100))
axes[1, 1].hist(rng.normal(size=1000), bins=30)
fig.suptitle("overview")
fig.tight_layout()
fig.savefig("overview.png", dpi=80)
fig.savefig("overview.svg")
fig.savefig("overview.pdf")
plt.close(fig)
try:
    import seaborn as sns

    df = pd.DataFrame(rng.normal(size=(50, 4)), columns=list("wxyz"))
    ax = sns.heatmap(df.corr(), annot=True)
    ax.figure.savefig("heatmap.png")
    plt.close("all")
    g = sns.pairplot(df.assign(k=rng.choice(["a", "b"], 50)), hue="k")
    g.savefig("pairs.png")
except ImportError:
    print("seaborn not installed")
df = pd.DataFrame({"x": range(10), "y": rng.normal(size=10)})
df.plot(x="x", y="y", kind="line").figure.savefig("pandas_plot.png")
plt.close("all")
print("charts done")
