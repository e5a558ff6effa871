"""numpy and scipy: linear algebra, FFT, random, .npy/.npz and memmap files, stats, optimize, sparse."""

import numpy as np

rng = np.random.default_rng(1)
a = rng.normal(size=(300, 300))
print(round(float(np.linalg.det(a @ a.T + np.eye(300)) > 0), 1), np.linalg.eigvalsh(a + a.T).shape)
print(np.abs(np.fft.rfft(rng.normal(size=4096))).argmax() >= 0)
np.save("a.npy", a)
np.savez_compressed("ab.npz", a=a, b=a.T)
print(np.load("a.npy").shape, sorted(np.load("ab.npz").files))
mm = np.memmap("mm.dat", dtype="float64", mode="w+", shape=(1000, 100))
mm[:] = 1.5
mm.flush()
del mm
print(float(np.memmap("mm.dat", dtype="float64", mode="r", shape=(1000, 100)).sum()))

from scipy import interpolate, optimize, signal, sparse, stats  # noqa: E402

x = rng.normal(5, 2, 1000)
print(stats.ttest_1samp(x, 5).pvalue > 0, stats.describe(x).nobs)
print(round(float(optimize.minimize(lambda v: (v[0] - 3) ** 2 + (v[1] + 1) ** 2, [0, 0]).x[0]), 3))
f = interpolate.interp1d(np.arange(10), np.arange(10) ** 2)
print(float(f(4.5)))
m = sparse.random(500, 500, density=0.01, random_state=0, format="csr")
print(m.nnz, (m @ m.T).shape)
b, a2 = signal.butter(4, 0.1)
print(signal.filtfilt(b, a2, rng.normal(size=500)).shape)
