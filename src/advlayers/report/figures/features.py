"""Paper Fig. 8: joint 2-D embeddings of clean and adversarial activation vectors, with density contours."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .style import (
    CONDITIONS,
    FULL_WIDTH,
    _figure,
    _images_text,
    _legend,
    _ordered,
    _plain,
    _seeds,
    _styled,
    _suptitle,
    run_text,
)

METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "trimap": "TriMap"}


def _kde_contours(ax, x, y, color, extent, rng, max_points: int, grid: int = 70) -> None:
    from scipy.stats import gaussian_kde

    if len(x) < 10:
        return
    idx = rng.choice(len(x), size=min(len(x), max_points), replace=False)
    pts = np.vstack([x[idx], y[idx]])
    try:
        kde = gaussian_kde(pts)
    except np.linalg.LinAlgError:  # all points on a line
        return
    gx, gy = np.meshgrid(np.linspace(extent[0], extent[1], grid), np.linspace(extent[2], extent[3], grid))
    density = kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    # contours at the densities enclosing 25, 50, 75 and 90% of the probability mass
    flat = np.sort(density.ravel())[::-1]
    mass = np.cumsum(flat) / flat.sum()
    levels = sorted({float(flat[min(np.searchsorted(mass, q), len(flat) - 1)]) for q in (0.9, 0.75, 0.5, 0.25)})
    if len(levels) > 1:
        ax.contour(gx, gy, density, levels=levels, colors=[color], linewidths=0.6, zorder=3)


@_styled
def features_figure(embeddings: pd.DataFrame, info: dict | None = None, *, kde_points: int = 1500, seed: int = 0):
    """Paper Fig. 8: rows = pretrained net (conventional, adversarial), columns = modules; each panel the joint
    2-D embedding (t-SNE / UMAP / TriMap) of the clean (blue) and adversarial (vermillion) activation vectors,
    with density contours (Gaussian KDE of at most `kde_points` seeded points per condition; contours enclose
    25/50/75/90% of the mass). Embeddings of different seeds live in different coordinates: only the lowest seed
    is drawn. 7 in wide.

    `embeddings`: one or more embedding parquet files concatenated (columns pretraining, module, method, x, y,
    condition, seed, ...)."""
    embeddings = _plain(embeddings)
    info = info or {}
    seeds = _seeds(embeddings)
    data = embeddings[embeddings["seed"] == seeds[0]] if seeds else embeddings
    nets = _ordered(data["pretraining"])
    modules = sorted(data["module"].unique(), key=lambda m: (len(str(m)), str(m)))
    method = info.get("method") or (str(data["method"].iloc[0]) if "method" in data and len(data) else "")
    method_label = METHOD_LABELS.get(method, method)
    ncols = max(len(modules), 1)
    panel = min((FULL_WIDTH - 0.4) / ncols, 1.75)
    fig, axes = _figure(FULL_WIDTH, 0.95 + panel * len(nets), len(nets), ncols)
    rng = np.random.default_rng(seed)
    for r, net in enumerate(nets):
        for c, module in enumerate(modules):
            ax = axes[r, c]
            cell = data[(data["pretraining"] == net) & (data["module"] == module)]
            if len(cell):
                x0, x1 = np.nanpercentile(cell["x"], [0.5, 99.5])
                y0, y1 = np.nanpercentile(cell["y"], [0.5, 99.5])
                px, py = 0.08 * (x1 - x0 or 1), 0.08 * (y1 - y0 or 1)
                extent = (x0 - px, x1 + px, y0 - py, y1 + py)
            else:
                extent = (0, 1, 0, 1)
            for condition, color in CONDITIONS.items():
                pts = cell[cell["condition"] == condition]
                alpha = float(np.clip(600 / max(len(pts), 1), 0.06, 0.5))
                ax.scatter(pts["x"], pts["y"], s=1.2, color=color, alpha=alpha, lw=0, rasterized=True, zorder=1)
            for condition, color in CONDITIONS.items():
                pts = cell[cell["condition"] == condition]
                _kde_contours(ax, pts["x"].to_numpy(float), pts["y"].to_numpy(float), color, extent, rng, kde_points)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
            if r == 0:
                ax.set_title(f"after {module}")
            if c == 0:
                ax.set_ylabel(f"{net}ly pretrained\n{method_label} 2")
            if r == len(nets) - 1:
                ax.set_xlabel(f"{method_label} 1")
    handles = [Line2D([], [], color=color, marker="o", ms=3, ls="-", lw=0.6,
                      label=f"{condition} (points, density contours)") for condition, color in CONDITIONS.items()]
    _legend(fig, handles, ncol=2)
    _suptitle(fig, f"{method_label} of clean vs adversarial activation vectors: "
                   f"{run_text(info, data, n=False)}{_images_text(info, data)}")
    return fig
