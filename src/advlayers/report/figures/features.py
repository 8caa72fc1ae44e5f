"""Paper Fig. 8: joint 2-D embeddings of clean and adversarial activation vectors, with their densities as filled regions (seaborn.kdeplot)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from .style import (
    FULL_WIDTH,
    OKABE_ITO,
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
# The paper's Fig. 8: green regions the clean (non-adversarial), red the adversarial vectors; here Okabe-Ito's
# bluish green and vermillion (told apart with the common colour-vision deficiencies) and, as a second cue,
# solid vs dashed region edges.
DENSITY = {"clean": (OKABE_ITO["green"], "-"), "adversarial": (OKABE_ITO["vermillion"], "--")}
LEVELS = [0.1, 0.25, 0.5, 0.75, 1.0]  # iso-proportions: the regions hold 90, 75, 50 and 25% of the mass


def _density(ax, pts: pd.DataFrame, color, linestyle: str, max_points: int, rng) -> None:
    """seaborn.kdeplot of at most `max_points` seeded points: filled regions enclosing 90/75/50/25% of the
    probability mass (iso-proportion levels), each region's edge drawn in `linestyle`."""
    if len(pts) < 10:
        return
    pts = pts.iloc[np.sort(rng.choice(len(pts), size=min(len(pts), max_points), replace=False))]
    for style in ({"fill": True, "alpha": 0.35, "zorder": 2}, {"linewidths": 0.6, "linestyles": linestyle, "zorder": 3}):
        try:
            sns.kdeplot(x=pts["x"].to_numpy(float), y=pts["y"].to_numpy(float), ax=ax, levels=LEVELS, color=color,
                        gridsize=70, warn_singular=False, **style)
        except np.linalg.LinAlgError:  # all points on a line
            return


def _panel(ax, cell: pd.DataFrame, rng, kde_points: int) -> None:
    """One module of one net: the points of both conditions, their densities, limits at the 0.5-99.5th
    percentiles (8% margin) so that a few far points do not shrink the cloud."""
    for condition, (color, linestyle) in DENSITY.items():
        pts = cell[cell["condition"] == condition]
        alpha = float(np.clip(600 / max(len(pts), 1), 0.06, 0.5))
        ax.scatter(pts["x"], pts["y"], s=1.2, color=color, alpha=alpha, lw=0, rasterized=True, zorder=1)
        _density(ax, pts, color, linestyle, kde_points, rng)
    if len(cell):
        for axis, set_lim in (("x", ax.set_xlim), ("y", ax.set_ylim)):
            lo, hi = np.nanpercentile(cell[axis], [0.5, 99.5])
            pad = 0.08 * (hi - lo or 1)
            set_lim(lo - pad, hi + pad)
    ax.set(xticks=[], yticks=[], xlabel="", ylabel="")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)


@_styled
def features_figure(embeddings: pd.DataFrame, info: dict | None = None, *, kde_points: int = 1500, seed: int = 0):
    """Paper Fig. 8: rows = pretrained net (conventional, adversarial), columns = modules; each panel the joint
    2-D embedding (t-SNE / UMAP / TriMap) of the clean (green) and adversarial (vermillion) activation vectors,
    with their densities as filled regions (`seaborn.kdeplot`, Gaussian KDE of at most `kde_points` seeded
    points per condition; the regions enclose 90/75/50/25% of the mass; edges solid clean, dashed adversarial).
    Embeddings of different seeds live in different coordinates: only the lowest seed is drawn. 7 in wide.

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
            _panel(axes[r, c], data[(data["pretraining"] == net) & (data["module"] == module)], rng, kde_points)
            axes[r, c].set_title(f"after {module}" if r == 0 else "")
        axes[r, 0].set_ylabel(f"{net}ly pretrained\n{method_label} 2")
    for ax in axes[-1]:
        ax.set_xlabel(f"{method_label} 1")
    handles = [Patch(facecolor=color, edgecolor=color, alpha=0.6, ls=ls, label=f"{condition} (points, density regions)")
               for condition, (color, ls) in DENSITY.items()]
    _legend(fig, handles, ncol=2)
    _suptitle(fig, f"{method_label} of clean vs adversarial activation vectors: "
                   f"{run_text(info, data, n=False)}{_images_text(info, data)}")
    return fig
