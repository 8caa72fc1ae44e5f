"""Paper §6 feature distributions: activation vectors of clean vs PGD images after modules m1..m4 (Fig. 8),
their 2-D embeddings (t-SNE, UMAP, TriMap) and, beyond the paper, two quantitative two-sample tests of
"do adversarial feature vectors follow the clean distribution?": kernel MMD and a clean-vs-adversarial
detector (classifier two-sample test).

An activation vector is the C-dimensional column z = a[:, h, w] of a module's output a (C, H, W) at one
spatial position (paper: 100 random positions from each of 1,000 images).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .attacks import AttackSpec, perturb

FORMAT = "advlayers-activations-v1"
EMBED_METHODS = ("tsne", "umap", "trimap")

# --------------------------------------------------------------------------- sampling activations


def _positions(n_images: int, n_positions: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(n_images, k) flat positions: without replacement when the map has >= k positions, else with."""
    if n_positions >= k:
        return torch.rand(n_images, n_positions, generator=generator).argsort(dim=1)[:, :k]
    return torch.randint(n_positions, (n_images, k), generator=generator)


def sample_activations(
    model,
    split,
    *,
    modules=("m1", "m2", "m3", "m4"),
    n_images: int = 1000,
    vectors_per_image: int = 100,
    attack: AttackSpec,
    seed: int = 0,
    batch_size: int = 100,
    device="cpu",
) -> dict:
    """Activation vectors after each of `modules` for `n_images` test images and their PGD counterparts.

    Images are `split.subset(n_images, seed)` (image id i = the i-th image of that subset). Each is attacked
    with `attack` on its true label, model in eval mode (`attacks.perturb`, random start seeded by `seed`).
    Per module, `vectors_per_image` spatial positions are drawn per image (seeded by `seed` and the module,
    independent of `batch_size`; without replacement when the map has enough positions, else with) and the
    *same* positions are read from the clean and the adversarial activation.

    Returns {"meta": {...}, "image": (N*k,) image id of each vector row, "label"/"pred_clean"/"pred_adv":
    (N,), "linf": (N,) max |x_adv - x|, "modules": {m: {"clean": float32 (N*k, C), "adv": float32 (N*k, C),
    "position": int64 (N*k, 2) (h, w), "shape": (C, H, W)}}}; rows are image-major (row = i*k + j).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    subset = split.subset(n_images, seed=seed)
    n = len(subset)
    k = vectors_per_image
    if n == 0 or k < 1:
        raise ValueError(f"need at least one image and one vector per image, got {n} images, k={k}")
    attack_generator = torch.Generator().manual_seed(seed)
    captured: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(m).register_forward_hook(
        lambda _module, _inputs, output, m=m: captured.__setitem__(m, output)) for m in modules]
    positions: dict[str, torch.Tensor] = {}  # (n, k) flat positions, drawn when a module's shape is first seen
    shapes: dict[str, tuple[int, int, int]] = {}
    chunks = {m: {"clean": [], "adv": []} for m in modules}
    labels, pred_clean, pred_adv, linf = [], [], [], []
    try:
        start = 0
        for x, y in subset.batches(batch_size, shuffle=False, augment=False, device=device):
            # The hooks also fire inside the attack; `captured` is only read right after the model(inputs) below.
            x_adv = perturb(model, x, y, attack, bn_mode="eval", generator=attack_generator)
            stop = start + len(y)
            for condition, inputs, preds in (("clean", x, pred_clean), ("adv", x_adv, pred_adv)):
                with torch.no_grad():
                    preds.append(model(inputs).argmax(1).cpu())
                for m in modules:
                    out = captured[m]
                    if out.ndim != 4:
                        raise ValueError(f"{m} outputs shape {tuple(out.shape)}, not a (B, C, H, W) feature map")
                    b, c, h, w = out.shape
                    if m not in positions:
                        # keyed by the module's name: m1's positions do not depend on which others are sampled
                        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(m.encode()))
                        positions[m] = _positions(n, h * w, k, g)
                        shapes[m] = (c, h, w)
                    flat = positions[m][start:stop].to(device)  # (b, k)
                    picked = out.flatten(2).gather(2, flat.unsqueeze(1).expand(b, c, k))  # (b, c, k)
                    chunks[m][condition].append(picked.transpose(1, 2).reshape(b * k, c).float().cpu())
            labels.append(y.cpu())
            linf.append((x_adv - x).flatten(1).abs().amax(1).cpu())
            start = stop
    finally:
        for hook in hooks:
            hook.remove()
        captured.clear()

    result_modules = {}
    for m in modules:
        flat = positions[m].reshape(-1)
        width = shapes[m][2]
        result_modules[m] = {
            "clean": torch.cat(chunks[m]["clean"]).numpy(),
            "adv": torch.cat(chunks[m]["adv"]).numpy(),
            "position": torch.stack([flat // width, flat % width], 1).numpy(),
            "shape": shapes[m],
        }
    spec = getattr(model, "spec", None)
    meta = {
        "format": FORMAT, "arch": getattr(spec, "arch", None), "num_classes": getattr(spec, "num_classes", None),
        "image_size": getattr(spec, "image_size", None), "modules": list(modules), "n_images": n,
        "vectors_per_image": k, "seed": seed, "attack": attack.as_dict(),
        "image_ids": f"positions in split.subset({n_images}, seed={seed})",
    }
    return {
        "meta": meta,
        "image": np.repeat(np.arange(n), k),
        "label": torch.cat(labels).numpy(),
        "pred_clean": torch.cat(pred_clean).numpy(),
        "pred_adv": torch.cat(pred_adv).numpy(),
        "linf": torch.cat(linf).numpy(),
        "modules": result_modules,
    }


def save_activations(path, result: dict) -> None:
    """`result` of `sample_activations` as one .npz (keys 'm1/clean', 'm1/adv', ...; metadata as JSON),
    written to a temporary file next to `path` and renamed, so `path` is either absent or complete."""
    path = Path(path)
    arrays = {key: np.asarray(result[key]) for key in ("image", "label", "pred_clean", "pred_adv", "linf")}
    for m, entry in result["modules"].items():
        for key in ("clean", "adv", "position", "shape"):
            arrays[f"{m}/{key}"] = np.asarray(entry[key])
    arrays["meta"] = np.array(json.dumps(result["meta"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # uncompressed: activations barely compress and load much faster
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_activations(path) -> dict:
    """The dict `save_activations` wrote (same structure as `sample_activations` returns)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not an activations file of format {FORMAT}")
        result = {key: data[key] for key in ("image", "label", "pred_clean", "pred_adv", "linf")}
        result["meta"] = meta
        result["modules"] = {
            m: {"clean": data[f"{m}/clean"], "adv": data[f"{m}/adv"], "position": data[f"{m}/position"],
                "shape": tuple(int(v) for v in data[f"{m}/shape"])}
            for m in meta["modules"]
        }
    return result


# --------------------------------------------------------------------------- 2-D embeddings


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
        raise ValueError(f"embed needs an (N >= 5, C) array, got shape {vectors.shape}")
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


def embed_clean_adv(clean, adv, method: str = "tsne", *, seed: int = 0, max_points: int | None = 20_000):
    """One joint embedding of paired clean and adversarial vectors (same rows = same image and position).

    The same max_points // 2 rows are kept from both sets, so the two clouds stay paired and balanced.
    Returns a DataFrame with x, y, condition ('clean'/'adversarial') and row (index into clean/adv)."""
    import pandas as pd

    clean, adv = np.asarray(clean), np.asarray(adv)
    if clean.shape != adv.shape:
        raise ValueError(f"clean and adversarial vectors differ in shape: {clean.shape} vs {adv.shape}")
    rows = subsample(len(clean), None if max_points is None else max_points // 2, seed)
    coords, _ = embed(np.concatenate([clean[rows], adv[rows]]), method, seed=seed, max_points=None)
    return pd.DataFrame({
        "x": coords[:, 0], "y": coords[:, 1],
        "condition": np.repeat(["clean", "adversarial"], len(rows)),
        "row": np.concatenate([rows, rows]),
    })


# --------------------------------------------------------------------------- two-sample statistics


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min_(0)


def mmd_test(x, y, *, n_permutations: int = 200, seed: int = 0) -> dict:
    """Unbiased MMD^2 between samples x (n, d) and y (m, d) with a Gaussian kernel, bandwidth by the median
    heuristic (median pairwise distance of the pooled sample), and its permutation p-value.

    All permutations reuse one pooled kernel matrix: each is a relabelling, evaluated as a batched
    quadratic form, so the cost is one (n+m)^2 kernel plus n_permutations cheap reductions."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs at least two samples on each side, got {n} and {m}")
    pooled = torch.cat([x, y])
    d2 = _sq_dists(pooled, pooled)
    off_diagonal = d2[~torch.eye(n + m, dtype=torch.bool)]
    median = off_diagonal.median()
    bandwidth2 = median if median > 0 else off_diagonal.mean().clamp_min(1e-12)
    kernel = torch.exp(-d2 / bandwidth2)
    kernel.fill_diagonal_(0)  # the unbiased estimator leaves out i == j terms

    def mmd2(labels: torch.Tensor) -> torch.Tensor:
        # labels: (P, n+m) booleans, True = first sample; returns (P,) unbiased MMD^2 for each labelling
        a = labels.to(kernel.dtype)
        b = 1 - a
        kxx = ((a @ kernel) * a).sum(1) / (n * (n - 1))
        kyy = ((b @ kernel) * b).sum(1) / (m * (m - 1))
        kxy = ((a @ kernel) * b).sum(1) / (n * m)
        return kxx + kyy - 2 * kxy

    observed = mmd2(torch.arange(n + m).lt(n).unsqueeze(0))[0]
    generator = torch.Generator().manual_seed(seed)
    labels = torch.rand(n_permutations, n + m, generator=generator).argsort(1).lt(n)
    null = torch.cat([mmd2(chunk) for chunk in labels.split(50)])
    p_value = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return {"mmd2": float(observed), "mmd_p_value": p_value, "n_permutations": n_permutations,
            "mmd_bandwidth": float(bandwidth2.sqrt())}


def image_split(image_ids, *, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks over vector rows, splitting by image: all vectors of an image fall on one side."""
    image_ids = np.asarray(image_ids)
    images = np.unique(image_ids)
    if len(images) < 2:
        raise ValueError("an image-wise split needs vectors from at least two images")
    n_test = min(max(1, round(test_fraction * len(images))), len(images) - 1)
    test_images = np.random.default_rng(seed).choice(images, size=n_test, replace=False)
    test = np.isin(image_ids, test_images)
    return ~test, test


def detector_test(clean, adv, image_ids, *, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """Classifier two-sample test: a logistic regression on standardised vectors separates clean from
    adversarial, trained and scored on disjoint images (`image_split`). AUROC ~0.5 = indistinguishable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clean, adv, image_ids = np.asarray(clean), np.asarray(adv), np.asarray(image_ids)
    train, test = image_split(image_ids, test_fraction=test_fraction, seed=seed)
    x = np.concatenate([clean, adv])
    y = np.repeat([0, 1], [len(clean), len(adv)])
    train, test = np.concatenate([train, train]), np.concatenate([test, test])
    detector = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    detector.fit(x[train], y[train])
    scores = detector.decision_function(x[test])
    return {"detector_auroc": float(roc_auc_score(y[test], scores)),
            "detector_acc": float(((scores > 0) == y[test]).mean()),
            "n_train": int(train.sum()), "n_test": int(test.sum())}


def feature_divergence(clean, adv, image_ids=None, *, seed: int = 0, max_points: int = 2000,
                       n_permutations: int = 200, test_fraction: float = 0.3, max_images: int | None = 300) -> dict:
    """How far adversarial activation vectors are from clean ones (quantifies Fig. 8), as a flat dict:

    (a) mmd2, mmd_p_value, n_permutations, mmd_bandwidth: `mmd_test` on max_points // 2 seeded vectors from each
        set (different rows for the two sets, so pairing does not enter the two-sample test);
    (b) detector_auroc, detector_acc, n_train, n_test: `detector_test` on all vectors of max_images seeded
        images (None = all), split by image (`image_ids` per row; without it every row is its own image).
    """
    clean, adv = np.asarray(clean, dtype=np.float32), np.asarray(adv, dtype=np.float32)
    if clean.shape != adv.shape:
        raise ValueError(f"clean and adversarial vectors differ in shape: {clean.shape} vs {adv.shape}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    half = min(len(clean), max_points // 2)
    rows_clean = np.sort(rng.choice(len(clean), size=half, replace=False))
    rows_adv = np.sort(rng.choice(len(adv), size=half, replace=False))
    result = mmd_test(clean[rows_clean], adv[rows_adv], n_permutations=n_permutations, seed=seed)
    ids = np.arange(len(clean)) if image_ids is None else np.asarray(image_ids)
    images = np.unique(ids)
    if max_images is not None and len(images) > max_images:
        rows = np.isin(ids, rng.choice(images, size=max_images, replace=False))
        clean, adv, ids = clean[rows], adv[rows], ids[rows]
    result.update(detector_test(clean, adv, ids, test_fraction=test_fraction, seed=seed))
    result["seconds"] = time.perf_counter() - t0
    return result
