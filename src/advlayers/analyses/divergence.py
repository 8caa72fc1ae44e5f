"""Beyond the paper (quantifies Fig. 8): do adversarial activation vectors follow the clean distribution?

Two two-sample tests on the vectors `advlayers.analyses.features` samples, both respecting that the vectors of one
image are NOT independent (up to 100 positions of one image, and its clean and adversarial version at the
same positions, are strongly correlated):

* `mmd_test`: unbiased kernel MMD^2 (Gaussian kernel, median-heuristic bandwidth) with a permutation
  p-value whose permutations move WHOLE IMAGES: each permutation flips, per image id independently with
  probability 1/2, whether that image's clean rows and adversarial rows exchange labels. Under the null
  (clean and adversarial vectors of an image are exchangeable) this is the paired permutation test of the
  actual sampling design; permuting single vectors would treat correlated rows as independent evidence and
  give far too small p-values.
* `detector_test`: a classifier two-sample test: logistic regression separating clean from adversarial,
  trained and scored on disjoint images (`image_split`); its held-out AUROC comes with a 95% percentile
  interval from a cluster bootstrap over the held-out IMAGES (all rows of a drawn image, clean and
  adversarial, enter together). The bootstrap draws come from a fixed `bootstrap_seed` over the SORTED
  held-out image ids, so two nets scored on the same images get the same draws and can be compared
  replicate by replicate.

`feature_divergence` runs both on one module's vectors and returns a flat dict (one table row).
Everything here is numpy (+ scikit-learn for the detector); no torch.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["mmd_test", "image_split", "detector_test", "feature_divergence", "cluster_auroc"]


def _check_rows(name: str, ids, n_rows: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.shape != (n_rows,):
        raise ValueError(f"{name} must hold one image id per row ({n_rows}), got shape {ids.shape}")
    return ids


def _check_pair(clean, adv) -> tuple[np.ndarray, np.ndarray]:
    clean, adv = np.asarray(clean), np.asarray(adv)
    if clean.ndim != 2:
        raise ValueError(f"clean must be a (rows, channels) array, got shape {clean.shape}")
    if adv.shape != clean.shape:
        raise ValueError(f"adv must have the shape of clean (row r = the same image and position), got "
                         f"{adv.shape} vs {clean.shape}")
    return clean, adv


# --------------------------------------------------------------------------- MMD, whole-image permutations


def _sq_dists(a: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", a, a)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * (a @ a.T), 0)


def _group_sums(matrix: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, n_groups) sums of `matrix`'s entries over row group x column group."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n_groups))
    rows = np.add.reduceat(matrix[order], starts, axis=0)
    return np.add.reduceat(rows[:, order], starts, axis=1)


def _weighted_mmd2(a: np.ndarray, b: np.ndarray, unit_kernel: np.ndarray, unit_rows: np.ndarray) -> np.ndarray:
    """(P,) unbiased MMD^2 for (P, units) weights: how often each (side, image) unit is in the first (`a`) and
    the second (`b`) sample. A unit taken w times adds w(w-1) copies of each of its rows paired with itself
    (kernel 1), which the zeroed diagonal of `unit_kernel` leaves out: they are added back (0 for 0/1 weights)."""
    nx, ny = a @ unit_rows, b @ unit_rows
    ka = a @ unit_kernel
    with np.errstate(divide="ignore", invalid="ignore"):
        kxx = ((ka * a).sum(1) + (a * (a - 1)) @ unit_rows) / (nx * (nx - 1))
        kyy = (((b @ unit_kernel) * b).sum(1) + (b * (b - 1)) @ unit_rows) / (ny * (ny - 1))
        kxy = (ka * b).sum(1) / (nx * ny)
        value = kxx + kyy - 2 * kxy
    return np.where((nx >= 2) & (ny >= 2), value, np.nan)


def _bootstrap_interval(unit_kernel, unit_rows, unit_side, unit_image, n_images: int, n_bootstrap: int,
                        seed: int) -> tuple[float, float]:
    """95% percentile interval of MMD^2 over `n_bootstrap` whole-image resamples drawn by `seed`."""
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    draws = np.random.default_rng(seed).integers(n_images, size=(int(n_bootstrap), n_images))
    parts = []
    for chunk in np.array_split(draws, max(1, len(draws) // 256)):
        counts = np.zeros(chunk.shape)
        np.add.at(counts, (np.arange(len(chunk))[:, None], chunk), 1)
        w = counts[:, unit_image]
        parts.append(_weighted_mmd2(w * (unit_side == 0), w * (unit_side == 1), unit_kernel, unit_rows))
    boot = np.concatenate(parts)
    if not np.isfinite(boot).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def mmd_test(x, y, *, x_images, y_images, n_permutations: int = 200, seed: int = 0, n_bootstrap: int = 1000,
             bootstrap_seed: int = 12345) -> dict:
    """Unbiased MMD^2 between samples x (n, d) and y (m, d), Gaussian kernel exp(-|a-b|^2 / h^2) with h^2 the
    median pairwise squared distance of the pooled sample, and a whole-image permutation p-value.

    `x_images` / `y_images`: the image id of each row. The exchangeable unit is an image: a permutation
    draws, per image id (seeded by `seed`), a fair coin, and where it comes up the image's rows in x and its
    rows in y swap sides (clean <-> adversarial for paired samples). When every image has as many rows in x
    as in y (the paired design `feature_divergence` uses) the sample sizes stay n and m; otherwise they vary
    with the permutation and each MMD^2 uses its own sizes (a permutation leaving a side under 2 rows gives
    NaN and never counts as extreme). p = (1 + #{null >= observed}) / (1 + n_permutations).

    `mmd2_lo`, `mmd2_hi`: 95% percentile interval of MMD^2 from a cluster bootstrap over the IMAGES (a drawn
    image brings all its rows, on both sides; `n_bootstrap` replicates drawn by `bootstrap_seed`): each
    replicate is the same unbiased MMD^2 on the resampled rows, copies of a row counting as distinct rows.

    Cost: one (n+m)^2 kernel matrix, summed once into blocks per (side, image) unit; each permutation and
    each bootstrap replicate is then a batched quadratic form over those units ((units)^2 work each).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (rows, features) arrays of equal width, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least two rows in x and in y, got {n} and {m}")
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    ids = np.concatenate([_check_rows("x_images", x_images, n), _check_rows("y_images", y_images, m)])
    images, image_index = np.unique(ids, return_inverse=True)
    side = np.repeat([0, 1], [n, m])
    units, unit_index = np.unique(side * len(images) + image_index, return_inverse=True)
    unit_side, unit_image = units // len(images), units % len(images)

    d2 = _sq_dists(np.concatenate([x, y]))
    off_diagonal = d2[np.triu_indices(n + m, 1)]
    bandwidth2 = float(np.median(off_diagonal))
    if bandwidth2 <= 0:  # more than half the pairs coincide: fall back to the mean
        bandwidth2 = max(float(off_diagonal.mean()), 1e-12)
    kernel = np.exp(-d2 / bandwidth2)
    np.fill_diagonal(kernel, 0)  # the unbiased estimator leaves out i == j terms
    unit_kernel = _group_sums(kernel, unit_index, len(units))
    unit_rows = np.bincount(unit_index, minlength=len(units)).astype(np.float64)
    del d2, kernel

    def mmd2(flips: np.ndarray) -> np.ndarray:
        # flips: (P, n_images) booleans; returns (P,) unbiased MMD^2 of each relabelling
        a = ((unit_side == 0) ^ flips[:, unit_image]).astype(np.float64)  # 1 = unit is in the first sample
        return _weighted_mmd2(a, 1 - a, unit_kernel, unit_rows)

    observed = float(mmd2(np.zeros((1, len(images)), dtype=bool))[0])
    flips = np.random.default_rng(seed).random((int(n_permutations), len(images))) < 0.5
    null = np.concatenate([mmd2(chunk) for chunk in np.array_split(flips, max(1, len(flips) // 256))])
    p_value = (1 + int(np.sum(null >= observed))) / (1 + int(n_permutations))
    lo, hi = _bootstrap_interval(unit_kernel, unit_rows, unit_side, unit_image, len(images), n_bootstrap,
                                 bootstrap_seed)
    return {"mmd2": observed, "mmd2_lo": lo, "mmd2_hi": hi, "mmd_p_value": p_value,
            "n_permutations": int(n_permutations), "mmd_bandwidth": float(np.sqrt(bandwidth2))}


# --------------------------------------------------------------------------- detector, image bootstrap


def image_split(image_ids, *, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks over vector rows, splitting by image: all vectors of an image fall on one side.

    round(test_fraction * images) test images (at least 1, at most all but 1), drawn with
    `np.random.default_rng(seed)` from the sorted unique ids: the same ids and seed give the same split."""
    image_ids = np.asarray(image_ids)
    images = np.unique(image_ids)
    if len(images) < 2:
        raise ValueError(f"image_ids must name at least two images for an image-wise split, got {len(images)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(max(1, round(test_fraction * len(images))), len(images) - 1)
    test_images = np.random.default_rng(seed).choice(images, size=n_test, replace=False)
    test = np.isin(image_ids, test_images)
    return ~test, test


def cluster_auroc(scores, positive, cluster, cluster_weights) -> np.ndarray:
    """AUROC of `scores` for labels `positive` with every row weighted by its cluster's weight, for each row
    of `cluster_weights` (B, n_clusters) at once: (B,) values. Ties count 1/2 (Mann-Whitney).

    With weights = how often each image was drawn, this is the AUROC of a cluster-bootstrap replicate: rank
    based, one sort for all replicates (scores are grouped into distinct values once; each replicate is two
    matrix products and a cumulative sum), no per-replicate sort or sklearn call."""
    scores, positive, cluster = np.asarray(scores), np.asarray(positive, dtype=bool), np.asarray(cluster)
    cluster_weights = np.atleast_2d(np.asarray(cluster_weights, dtype=np.float64))
    values, group = np.unique(scores, return_inverse=True)  # distinct scores, ascending; ties share a group
    n_clusters = cluster_weights.shape[1]
    rows_pos = np.zeros((n_clusters, len(values)))
    rows_neg = np.zeros((n_clusters, len(values)))
    np.add.at(rows_pos, (cluster[positive], group[positive]), 1)
    np.add.at(rows_neg, (cluster[~positive], group[~positive]), 1)
    out = np.empty(len(cluster_weights))
    step = max(1, 2_000_000 // max(1, len(values)))  # replicates per chunk: a few (chunk, values) arrays in memory
    for start in range(0, len(cluster_weights), step):
        w = cluster_weights[start:start + step]
        pos, neg = w @ rows_pos, w @ rows_neg  # (chunk, values): weight of positives / negatives at each score
        neg_below = np.cumsum(neg, axis=1) - neg
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + step] = (pos * (neg_below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))
    return out


def detector_test(clean, adv, image_ids, *, test_fraction: float = 0.3, seed: int = 0,
                  n_bootstrap: int = 1000, bootstrap_seed: int = 12345) -> dict:
    """Classifier two-sample test: a logistic regression on standardised vectors separates clean (0) from
    adversarial (1), trained and scored on disjoint images (`image_split(seed)`). AUROC ~0.5 = indistinguishable.

    Returns detector_auroc (held-out), detector_auroc_lo / _hi (95% percentile interval) and
    detector_auroc_boot (list of `n_bootstrap` replicates) of a cluster bootstrap over the held-out images:
    `np.random.default_rng(bootstrap_seed)` draws, per replicate, as many indices into the SORTED held-out
    image ids as there are held-out images, with replacement; every row (clean and adversarial) of a drawn
    image enters once per draw. The detector is not refitted (the interval is over test images, given the
    fitted detector). Also detector_acc (threshold 0), n_train, n_test (rows) and n_test_images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clean, adv = _check_pair(clean, adv)
    image_ids = _check_rows("image_ids", image_ids, len(clean))
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    train, test = image_split(image_ids, test_fraction=test_fraction, seed=seed)
    x = np.concatenate([clean, adv])
    y = np.repeat([0, 1], [len(clean), len(adv)])
    ids = np.concatenate([image_ids, image_ids])
    train, test = np.concatenate([train, train]), np.concatenate([test, test])
    detector = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    detector.fit(x[train], y[train])
    scores = detector.decision_function(x[test])

    test_images, test_cluster = np.unique(ids[test], return_inverse=True)  # sorted ids: draws pair across nets
    draws = np.random.default_rng(bootstrap_seed).integers(len(test_images), size=(int(n_bootstrap), len(test_images)))
    times_drawn = np.zeros((int(n_bootstrap), len(test_images)))
    np.add.at(times_drawn, (np.arange(int(n_bootstrap))[:, None], draws), 1)
    auroc = float(cluster_auroc(scores, y[test] == 1, test_cluster, np.ones((1, len(test_images))))[0])
    boot = cluster_auroc(scores, y[test] == 1, test_cluster, times_drawn)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"detector_auroc": auroc, "detector_auroc_lo": float(lo), "detector_auroc_hi": float(hi),
            "detector_auroc_boot": boot.tolist(), "detector_acc": float(((scores > 0) == y[test]).mean()),
            "n_train": int(train.sum()), "n_test": int(test.sum()), "n_test_images": len(test_images)}


# --------------------------------------------------------------------------- one module's record


def _images_within(image_ids, images, max_rows: int, rng) -> np.ndarray:
    """A seeded random subset of `images` whose rows add up to at most max_rows (at least two images)."""
    order = rng.permutation(images)
    rows = np.cumsum(np.unique(image_ids, return_counts=True)[1][np.searchsorted(images, order)])
    return np.sort(order[:max(2, int(np.searchsorted(rows, max_rows, side="right")))])


def feature_divergence(clean, adv, image_ids, *, seed: int = 0, max_points: int = 2000, n_permutations: int = 200,
                       test_fraction: float = 0.3, max_images: int | None = 300, n_bootstrap: int = 1000,
                       bootstrap_seed: int = 12345) -> dict:
    """How far adversarial activation vectors are from clean ones (quantifies Fig. 8), as a flat dict.

    clean, adv: (rows, channels), row r of both = the same image and position; image_ids: (rows,).
    (a) mmd2 (+ _lo, _hi: its image-bootstrap 95% interval), mmd_p_value, n_permutations, mmd_bandwidth, mmd_n_images: `mmd_test` on seeded WHOLE images
        (all their rows, clean and adversarial) adding up to at most max_points // 2 rows per side (at least
        two images), so the whole-image permutation keeps its unit intact;
    (b) detector_auroc (+ _lo, _hi, _boot), detector_acc, n_train, n_test, n_test_images: `detector_test` on
        all rows of max_images seeded images (None = all), split by image with `seed`.
    The image subsets depend only on `seed` and the image ids, so nets sampled on the same images (same
    sampling seed) are tested on the same images.
    """
    t0 = time.perf_counter()
    clean, adv = _check_pair(clean, adv)
    clean, adv = clean.astype(np.float32, copy=False), adv.astype(np.float32, copy=False)
    image_ids = _check_rows("image_ids", image_ids, len(clean))
    images = np.unique(image_ids)
    if len(images) < 2:
        raise ValueError(f"image_ids must name at least two images, got {len(images)}")
    if max_images is not None and max_images < 2:
        raise ValueError(f"max_images must be >= 2 (or None), got {max_images}")
    if max_points < 4:
        raise ValueError(f"max_points must be >= 4, got {max_points}")

    # separate streams per stage: the detector's images do not depend on the MMD's budget
    mmd_images = _images_within(image_ids, images, max_points // 2, np.random.default_rng([seed, 0]))
    rows = np.isin(image_ids, mmd_images)
    result = mmd_test(clean[rows], adv[rows], x_images=image_ids[rows], y_images=image_ids[rows],
                      n_permutations=n_permutations, seed=seed, n_bootstrap=n_bootstrap, bootstrap_seed=bootstrap_seed)
    result["mmd_n_images"] = len(mmd_images)

    if max_images is not None and len(images) > max_images:
        chosen = np.random.default_rng([seed, 1]).choice(images, size=max_images, replace=False)
        rows = np.isin(image_ids, chosen)
        clean, adv, image_ids = clean[rows], adv[rows], image_ids[rows]
    result.update(detector_test(clean, adv, image_ids, test_fraction=test_fraction, seed=seed,
                                n_bootstrap=n_bootstrap, bootstrap_seed=bootstrap_seed))
    result["seconds"] = time.perf_counter() - t0
    return result
