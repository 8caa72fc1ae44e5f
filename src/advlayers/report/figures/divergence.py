"""Beyond Fig. 8: how different clean and adversarial activation vectors are per module (MMD, detector AUROC)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .style import (
    FULL_WIDTH,
    NET_STYLE,
    OKABE_ITO,
    SEED_ALPHA,
    _figure,
    _images_text,
    _legend,
    _ordered,
    _plain,
    _styled,
    _suptitle,
    over_seeds,
    run_text,
)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate over all the tests given; NaN stays NaN)."""
    p = np.asarray(p_values, float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _divergence_handles(nets: list, alpha: float, multi: bool, n_tests: int = 0) -> list:
    """Legend entries: one per pretrained net, the MMD test's star, chance, the AUROC interval (and seeds)."""
    handles = [Patch(facecolor=NET_STYLE.get(n, (OKABE_ITO["grey"], None))[0], edgecolor="0.2",
                     hatch=NET_STYLE.get(n, (None, None))[1], label=f"{n}ly pretrained net") for n in nets]
    every = " (every seed)" if multi else ""
    handles += [Line2D([], [], ls="none", marker="$*$", color="k", ms=4,
                       label=f"MMD permutation test, Holm-adjusted p < {alpha:g} over all {n_tests} tests{every}"),
                Line2D([], [], color="0.3", ls="--", lw=0.8, label="chance (AUROC 0.5)"),
                Line2D([], [], color="0.3", marker="o", ms=3, lw=0.9, label="AUROC; bars: image-bootstrap 95% intervals")]
    if multi:
        handles.append(Line2D([], [], ls="none", marker="o", ms=3, color="0.2", alpha=0.6, label="single seed"))
    return handles


@_styled
def feature_divergence_figure(table: pd.DataFrame, info: dict | None = None, *, alpha: float = 0.05):
    """How different clean and adversarial activation vectors are, per module, conventionally vs adversarially
    pretrained net side by side. Left: MMD^2 (bars, mean over seeds; dots = seeds) with its image-bootstrap 95%
    interval (`mmd2_lo/hi`, when the table has them; several seeds: their envelope), '*' where the MMD
    permutation test gives p < `alpha` after Holm's correction over every test the figure shows (all nets,
    modules and seeds: one family, so the stars keep the family-wise error rate at `alpha`), in every seed. Right: held-out detector AUROC with its bootstrap 95%
    interval (`detector_auroc_lo/hi`), dashed line at chance (0.5). 7 in wide."""
    table = _plain(table)
    info = info or {}
    nets = _ordered(table["pretraining"])
    modules = sorted(table["module"].unique(), key=lambda m: (len(str(m)), str(m)))
    fig, axes = _figure(FULL_WIDTH, 2.7, 1, 2)
    left, right = axes[0]
    x = np.arange(len(modules))
    width = 0.8 / max(len(nets), 1)
    multi = table["seed"].nunique() > 1 if "seed" in table else False
    top = float(table[[c for c in ("mmd2", "mmd2_hi") if c in table]].max().max()) if len(table) else 1.0
    table = table.assign(mmd_p_holm=holm(table["mmd_p_value"].astype(float)))
    for i, net in enumerate(nets):
        color, hatch = NET_STYLE.get(net, (OKABE_ITO["grey"], None))
        sub = table[table["pretraining"] == net]
        pos = x + (i - (len(nets) - 1) / 2) * width
        mmd = sub.groupby("module")["mmd2"].mean().reindex(modules)
        pmax = sub.groupby("module")["mmd_p_holm"].max().reindex(modules)
        left.bar(pos, mmd, width * 0.9, color=color, edgecolor="0.2", hatch=hatch, lw=0.5, zorder=2)
        if "mmd2_lo" in sub:  # the image-bootstrap 95% interval (several seeds: their envelope)
            env = over_seeds(sub, ["module"], "mmd2").set_index("module").reindex(modules)
            left.errorbar(pos, mmd, yerr=[(mmd - env["lo"]).clip(lower=0), (env["hi"] - mmd).clip(lower=0)],
                          fmt="none", ecolor="0.15", elinewidth=0.7, capsize=1.5, zorder=4)
        if multi:
            xs = sub["module"].map({m: p for m, p in zip(modules, pos)})
            left.scatter(xs, sub["mmd2"], s=5, color="0.2", alpha=SEED_ALPHA, lw=0, zorder=3)
        for p, value, pv in zip(pos, mmd, pmax):
            if pd.notna(pv) and pv < alpha:
                left.annotate("*", (p, max(value, 0)), xytext=(0, 0.5), textcoords="offset points", ha="center",
                              va="bottom", fontsize=8, zorder=4)
        auc = over_seeds(sub, ["module"], "detector_auroc").set_index("module").reindex(modules)
        right.errorbar(pos, auc["mean"], yerr=[(auc["mean"] - auc["lo"]).clip(lower=0),
                                                             (auc["hi"] - auc["mean"]).clip(lower=0)], fmt="o",
                       color=color, mec="0.2", mew=0.5, ms=4, elinewidth=0.9, capsize=2, zorder=3)
        if multi:
            xs = sub["module"].map({m: p for m, p in zip(modules, pos)})
            right.scatter(xs, sub["detector_auroc"], s=5, color="0.2", alpha=SEED_ALPHA, lw=0, zorder=2)
    left.set_ylim(min(0.0, float(table["mmd2"].min()) * 1.1), top * 1.15 if top > 0 else 1.0)
    left.axhline(0, color="0.3", lw=0.5)
    left.set_ylabel("MMD² (RBF kernel, median bandwidth)")
    left.set_title("Maximum mean discrepancy, clean vs adversarial")
    right.axhline(0.5, color="0.3", ls="--", lw=0.8, zorder=1)
    lo = min(0.4, float(table["detector_auroc_lo"].min()) - 0.02) if "detector_auroc_lo" in table else 0.4
    right.set_ylim(max(lo, -0.02), 1.02)
    right.set_ylabel("detector AUROC (held-out images)")
    right.set_title("Linear detector of adversarial vectors")
    for ax in (left, right):
        ax.set_xticks(x, [f"after {m}" for m in modules])
        ax.set_xlabel("module")
        ax.grid(axis="y")
    _legend(fig, _divergence_handles(nets, alpha, multi, int(table["mmd_p_value"].notna().sum())), ncol=2)
    _suptitle(fig, f"Clean vs adversarial activation vectors: {run_text(info, table, n=False)}"
                   f"{_images_text(info, table)}")
    return fig
