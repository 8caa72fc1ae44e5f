"""Uncertainty of accuracies and of statistics built from them (numpy only).

* `wilson`: the 95% Wilson score interval of one accuracy (k correct of n).
* `bootstrap`: percentile interval of any statistic of several cells' per-sample outcomes, resampling the
  test images (one index draw shared by every cell, so comparisons stay paired) and, with several training
  seeds, the seeds first (a two-stage bootstrap: the seed spread enters the interval).
* `bootstrap_replicates`: the same replicates of a statistic with several components (the comparisons of an
  intersection-union test), for intervals and one-sided p-values; `percentile_interval` of one component.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

Z95 = 1.959963984540054


def wilson(k, n, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (n >= 1); (nan, nan) for n == 0."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def bootstrap_replicates(outcomes: Mapping[str, np.ndarray], statistic: Callable[[Mapping[str, float]], object], *,
                         n_boot: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(estimates, replicates) of a statistic with k components (a float is k = 1): estimates of shape (k,) from
    the full data, replicates of shape (n_boot, k).

    `outcomes[cell]` is a (seeds, images) 0/1 array: per-sample correctness of that cell for each training seed,
    columns aligned on the same test images for every cell. `statistic` receives {cell: accuracy} (the mean
    over seeds and images) and returns a float or a sequence of floats (nan where undefined). Each replicate
    draws seeds with replacement (when there are several), then images with replacement, the same draws for
    every cell (a two-stage, paired bootstrap).
    """
    cells = list(outcomes)
    arrays = {c: np.atleast_2d(np.asarray(outcomes[c], dtype=np.float64)) for c in cells}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"every cell needs the same (seeds, images) outcomes, got {sorted(shapes)}")
    n_seeds, n_images = shapes.pop()
    estimates = np.atleast_1d(np.asarray(statistic({c: float(a.mean()) for c, a in arrays.items()}), dtype=float))
    rng = np.random.default_rng(seed)
    stacked = np.stack([arrays[c] for c in cells])  # (cells, seeds, images)
    values = np.empty((n_boot, len(estimates)))
    chunk = max(1, 2_000_000 // max(1, len(cells) * n_seeds * n_images))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        seed_idx = rng.integers(0, n_seeds, (b, n_seeds)) if n_seeds > 1 else np.zeros((b, 1), int)
        image_idx = rng.integers(0, n_images, (b, n_images))
        # accuracy of each cell in each replicate: mean over the drawn seeds' rows and the drawn images
        per_seed = stacked[:, seed_idx[:, :, None], image_idx[:, None, :]].mean(axis=3)  # (cells, b, seeds)
        acc = per_seed.mean(axis=2)  # (cells, b)
        for j in range(b):
            values[done + j] = statistic({c: acc[i, j] for i, c in enumerate(cells)})
        done += b
    return estimates, values


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicates; (nan, nan) if fewer than 90% are finite."""
    replicates = np.asarray(replicates, dtype=float)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < 0.9 * len(replicates) or not len(finite):
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap(outcomes: Mapping[str, np.ndarray], statistic: Callable[[Mapping[str, np.ndarray]], float], *,
              n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, lo, hi) of a scalar `statistic` over cells' outcomes (`bootstrap_replicates`): the percentile
    interval of the finite replicates; (est, nan, nan) if fewer than 90% are finite.
    """
    estimates, values = bootstrap_replicates(outcomes, statistic, n_boot=n_boot, seed=seed)
    lo, hi = percentile_interval(values[:, 0], level)
    return float(estimates[0]), lo, hi
