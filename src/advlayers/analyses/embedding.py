"""Paper §6 (Fig. 8): 2-D embeddings (t-SNE, UMAP, TriMap) of clean and adversarial activation vectors.

Clean and adversarial vectors of a module are embedded JOINTLY (one fit on both clouds), so their relative
position in the plane means something; separate fits would place each cloud arbitrarily. The same rows
(image, position) are kept from both sets, so the two clouds stay paired and equally large. The embedding
libraries are imported only by `embed`, so importing this module is cheap (no torch).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..grid.vocabulary import EMBED_METHODS

__all__ = ["EMBED_METHODS", "subsample", "embed", "embed_clean_adv"]


def subsample(n: int, max_points: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of size min(n, max_points) (all of range(n) if it fits)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def embed(vectors, method: str = "tsne", *, seed: int = 0, max_points: int | None = 20_000):
    """2-D embedding of `vectors` (N, C): returns (coords (M, 2) float32, kept indices (M,)), M = min(N, max_points).

    * "tsne": openTSNE `TSNE(n_jobs=2, random_state=seed).fit` (FFT-accelerated gradients for large N).
    * "umap": umap-learn `UMAP(random_state=seed)`; a random_state makes UMAP single-threaded, chosen here
      because a pipeline output must be reproducible.
    * "trimap": `trimap.TRIMAP().fit_transform` (numba/Annoy). It takes no seed and samples its random
      triplets in parallel, so its output varies slightly between runs.

    Wall time on the 2-core CPU development machine, 256-dimensional inputs (two shifted Gaussian mixtures),
    after the first call's numba compilation (umap ~20 s; trimap compiles at import, ~20-60 s), partly
    with other jobs on the cores:
        method   10^4 points   10^5 points
        tsne          41 s         400 s
        umap          69 s         151 s   (umap runs 500 epochs up to 10^4 points, 200 above)
        trimap        41 s         226 s
    So the paper's 10^5 vectors per panel cost minutes each on a CPU; max_points (default 2*10^4) caps it.
    """
    if method not in EMBED_METHODS:
        raise ValueError(f"unknown embedding method {method!r}; valid choices: {', '.join(EMBED_METHODS)}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) < 5:
        raise ValueError(f"embed needs vectors of shape (N >= 5, C), got shape {vectors.shape}")
    kept = subsample(len(vectors), max_points, seed)
    x = vectors[kept]
    if method == "tsne":
        from openTSNE import TSNE

        coords = np.asarray(TSNE(n_jobs=2, random_state=seed).fit(x))
    elif method == "umap":
        from umap import UMAP

        with warnings.catch_warnings():  # single-threaded by choice (see above): silence umap's reminder
            warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
            coords = UMAP(random_state=seed).fit_transform(x)
    else:
        import trimap

        coords = trimap.TRIMAP().fit_transform(x)
    return np.asarray(coords, dtype=np.float32), kept


def embed_clean_adv(clean, adv, method: str = "tsne", *, image_ids=None, seed: int = 0,
                    max_points: int | None = 20_000):
    """One joint embedding of paired clean and adversarial vectors (same rows = same image and position).

    The same max_points // 2 rows are kept from both sets (seeded). Returns a DataFrame with x, y, condition
    ('clean'/'adversarial'), row (index into clean/adv) and, given `image_ids` (one per row), image."""
    import pandas as pd

    clean, adv = np.asarray(clean), np.asarray(adv)
    if clean.shape != adv.shape:
        raise ValueError(f"adv must have the shape of clean, got {adv.shape} vs {clean.shape}")
    if image_ids is not None:
        image_ids = np.asarray(image_ids)
        if image_ids.shape != (len(clean),):
            raise ValueError(f"image_ids must hold one id per row ({len(clean)}), got shape {image_ids.shape}")
    rows = subsample(len(clean), None if max_points is None else max_points // 2, seed)
    coords, _ = embed(np.concatenate([clean[rows], adv[rows]]), method, seed=seed, max_points=None)
    table = pd.DataFrame({
        "x": coords[:, 0], "y": coords[:, 1],
        "condition": np.repeat(["clean", "adversarial"], len(rows)),
        "row": np.concatenate([rows, rows]),
    })
    if image_ids is not None:
        table["image"] = image_ids[table["row"].to_numpy()]
    return table
