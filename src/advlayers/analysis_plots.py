"""Figures for the §5/§6 analyses (paper Figs. 5-8 plus the feature-divergence summary).

Every function takes tidy DataFrames (or arrays), writes the same figure as PNG and PDF and closes it.
Colours: clean accuracy / clean features blue or green, robust accuracy / adversarial features red.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

METRICS = {"clean_acc": ("clean", "tab:blue"), "robust_acc": ("robust", "tab:red")}
CONDITIONS = {"clean": "tab:green", "adversarial": "tab:red"}
NET_ORDER = ("conventional", "adversarial")

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.titlesize": 13, "legend.fontsize": 9})


def _save(fig, out_png, out_pdf) -> None:
    for path in (out_png, out_pdf):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _ordered(values, preferred: Sequence[str] = NET_ORDER) -> list:
    """Unique values, the preferred ones first in their order, the rest in order of appearance."""
    unique = list(pd.unique(pd.Series(values)))
    return [v for v in preferred if v in unique] + [v for v in unique if v not in preferred]


def _panels(df: pd.DataFrame, panel: str | None) -> list[tuple[str | None, pd.DataFrame]]:
    if panel is None or panel not in df:
        return [(None, df)]
    return [(value, df[df[panel] == value]) for value in _ordered(df[panel])]


def _grid(n: int, width: float, height: float, max_cols: int = 2, **kwargs):
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kwargs)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


# --------------------------------------------------------------------------- Fig. 5: per-layer cut-off


def plot_layer_cutoff(df: pd.DataFrame, out_png, out_pdf, *, layer_info, reference: pd.DataFrame | None = None,
                      panel: str | None = "setting", title: str = "Per-layer cut-off") -> None:
    """Clean and robust accuracy against the layer cut-off k (layers 0..k-1 retrained for 'before').

    df: cutoff, clean_acc, robust_acc, optional `direction` (before/after: line style) and optional `panel`
    column (one subplot per value, e.g. "conventional -> adversarial"). layer_info: `analyses.layer_table`
    rows (index, module): the cut-offs where a new module starts get a vertical line and the module's label.
    reference: rows with label, clean_acc, robust_acc (optionally the panel column), drawn as horizontal
    lines, e.g. the conventionally and adversarially pretrained nets.
    """
    info = pd.DataFrame(layer_info)
    starts = info.groupby("module", sort=False)["index"].min()  # cut-off = first layer of each module
    n_layers = len(info)
    panels = _panels(df, panel)
    fig, axes = _grid(len(panels), 6.5, 3.8, sharey=True)
    styles = {"before": ("-", "o"), "after": ("--", "s")}
    ref_styles = [":", "-.", (0, (5, 1)), (0, (1, 3))]
    for ax, (name, sub) in zip(axes, panels):
        directions = _ordered(sub["direction"], ("before", "after")) if "direction" in sub else ["before"]
        for direction in directions:
            part = (sub[sub["direction"] == direction] if "direction" in sub else sub).sort_values("cutoff")
            line, marker = styles.get(direction, ("-", "^"))
            for metric, (label, color) in METRICS.items():
                ax.plot(part["cutoff"], part[metric], line, marker=marker, ms=3.5, color=color,
                        label=f"{label}, retrain {direction} cut-off")
        if reference is not None:
            refs = reference if panel is None or panel not in reference else reference[reference[panel] == name]
            for i, (_, ref) in enumerate(refs.iterrows()):
                for metric, (label, color) in METRICS.items():
                    ax.axhline(ref[metric], color=color, lw=1, alpha=0.7, ls=ref_styles[i % len(ref_styles)],
                               label=f"{label}, {ref['label']}")
        for module, start in starts.items():
            end = starts[starts > start].min() if (starts > start).any() else n_layers
            if start > 0:
                ax.axvline(start, color="0.6", lw=0.8, zorder=0)
            ax.text((start + end) / 2, 1.01, module, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=9, color="0.3")
        ax.set_xlim(-0.5, n_layers + 0.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
        ax.set_xlabel("layer cut-off k (layers 0..k-1 before it)")
        ax.set_ylabel("accuracy")
        if name is not None:
            ax.set_title(str(name), pad=16)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=min(4, len(unique)),
               bbox_to_anchor=(0.5, -0.02 - 0.04 * (len(unique) // 4)), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)


# --------------------------------------------------------------------------- Fig. 6: module combinations


def plot_combinations(summary_df: pd.DataFrame, out_png, out_pdf, *, panel: str | None = "pretrain",
                      title: str = "Module combinations: median accuracy with / without each module") -> None:
    """Paper Fig. 6 from `analyses.combination_summary`: per module, the median (bar) and 25-75th percentile
    (error bar) of clean and robust accuracy over the retrained subsets that include vs exclude it."""
    panels = _panels(summary_df, panel)
    fig, axes = _grid(len(panels), 6.5, 3.8, sharey=True)
    bars = [(metric, membership) for metric in METRICS for membership in ("included", "excluded")]
    width = 0.2
    for ax, (name, sub) in zip(axes, panels):
        modules = sorted(sub["module"].unique())
        x = np.arange(len(modules))
        for i, (metric, membership) in enumerate(bars):
            part = sub[(sub["metric"] == metric) & (sub["membership"] == membership)].set_index("module").reindex(modules)
            label, color = METRICS[metric]
            excluded = membership == "excluded"
            ax.bar(x + (i - 1.5) * width, part["median"], width,
                   yerr=[part["median"] - part["q25"], part["q75"] - part["median"]], capsize=2,
                   color="white" if excluded else color, edgecolor=color, hatch="///" if excluded else None,
                   error_kw={"elinewidth": 0.8, "ecolor": "0.2"}, label=f"{label}, module {membership}")
        ax.set_xticks(x, modules)
        ax.set_ylim(0, 1)
        ax.set_xlabel("module")
        ax.set_ylabel("median accuracy (IQR)")
        if name is not None:
            ax.set_title(f"{panel}: {name}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.06), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)


# --------------------------------------------------------------------------- Fig. 7: re-initialisation


def plot_reinit(df: pd.DataFrame, out_png, out_pdf, *, panels: Sequence[str] = ("pretrain", "dataset"),
                title: str = "Layer-wise re-initialisation robustness") -> None:
    """Paper Fig. 7 as heat maps, one per (pretrained net, dataset): columns = 'none' (the original net)
    then every layer in forward order, rows = clean / robust accuracy after re-initialisation (values at
    initialisation) and re-randomisation (a fresh draw).

    df: layer_index (-1 for none), layer_name, how (none/reinit/rerandomize), clean_acc, robust_acc and the
    `panels` columns present."""
    keys = [c for c in panels if c in df]
    groups = list(df.groupby(keys, sort=False)) if keys else [((), df)]
    groups.sort(key=lambda kv: tuple(NET_ORDER.index(v) if v in NET_ORDER else 99 for v in np.atleast_1d(kv[0])))
    n_cols = df["layer_index"].nunique()
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(7.0, 0.28 * n_cols + 2.5), 2.6 * len(groups) + 0.8),
                             squeeze=False)
    rows = [(metric, how) for metric in METRICS for how in ("reinit", "rerandomize")]
    row_labels = [f"{METRICS[m][0]}, {'re-init' if h == 'reinit' else 're-rand'}" for m, h in rows]
    for ax, (key, sub) in zip(axes[:, 0], groups):
        columns = sub[["layer_index", "layer_name"]].drop_duplicates().sort_values("layer_index")
        original = sub[sub["how"] == "none"]
        grid = np.full((len(rows), len(columns)), np.nan)
        for r, (metric, how) in enumerate(rows):
            part = pd.concat([original, sub[sub["how"] == how]]).groupby("layer_index")[metric].mean()
            grid[r] = part.reindex(columns["layer_index"]).to_numpy()
        table = pd.DataFrame(grid, index=row_labels, columns=columns["layer_name"])
        sns.heatmap(table, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=len(columns) <= 24, fmt=".2f",
                    annot_kws={"fontsize": 6}, cbar_kws={"label": "accuracy", "pad": 0.01}, linewidths=0.3)
        ax.set_xlabel("re-initialised layer ('none' = original net)")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelsize=7, rotation=90)
        ax.tick_params(axis="y", labelsize=8, rotation=0)
        values = np.atleast_1d(key) if keys else []
        ax.set_title(", ".join(f"{v} pretrained net" if k == "pretrain" else str(v) for k, v in zip(keys, values)))
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)


# --------------------------------------------------------------------------- Fig. 8: feature embeddings


def plot_feature_embeddings(embeddings: pd.DataFrame, out_png, out_pdf, *, method: str = "t-SNE",
                            kde_points: int = 2000, seed: int = 0,
                            title: str = "Activation vectors of clean and adversarial images") -> None:
    """Paper Fig. 8: rows = pretrained net (conventional, adversarial), columns = modules; each panel is the
    2-D embedding (x, y) of clean (green) and adversarial (red) vectors with a kernel density overlay.

    embeddings: columns net, module, x, y, condition ('clean'/'adversarial'), e.g. `features.embed_clean_adv`
    outputs with net/module added. The KDE uses at most `kde_points` seeded points per condition and panel
    (gaussian KDE cost grows with points x grid)."""
    nets = _ordered(embeddings["net"])
    modules = sorted(embeddings["module"].unique())
    fig, axes = plt.subplots(len(nets), len(modules), figsize=(3.0 * len(modules), 3.0 * len(nets) + 0.6),
                             squeeze=False)
    rng = np.random.default_rng(seed)
    for r, net in enumerate(nets):
        for c, module in enumerate(modules):
            ax = axes[r, c]
            panel = embeddings[(embeddings["net"] == net) & (embeddings["module"] == module)]
            for condition, color in CONDITIONS.items():
                points = panel[panel["condition"] == condition]
                alpha = float(np.clip(2000 / max(len(points), 1), 0.05, 0.5))  # dense clouds stay readable
                ax.scatter(points["x"], points["y"], s=2, color=color, alpha=alpha, linewidths=0,
                           rasterized=True, label=f"{condition} (points)")
                if len(points) > 10:
                    kde = points.iloc[rng.choice(len(points), size=min(len(points), kde_points), replace=False)]
                    sns.kdeplot(x=kde["x"].to_numpy(), y=kde["y"].to_numpy(), ax=ax, color=color, levels=6,
                                linewidths=0.9, warn_singular=False)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(module)
            if c == 0:
                ax.set_ylabel(f"{net} net\n{method} 2")
            if r == len(nets) - 1:
                ax.set_xlabel(f"{method} 1")
    handles = [plt.Line2D([], [], marker="o", ls="-", color=color, label=f"{condition} (points + KDE)")
               for condition, color in CONDITIONS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.03), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)


def plot_feature_divergence(df: pd.DataFrame, out_png, out_pdf,
                            title: str = "Clean vs adversarial activation vectors") -> None:
    """MMD^2 (left) and clean-vs-adversarial detector AUROC (right, 0.5 = indistinguishable) per module,
    conventional vs adversarial net. df: net, module, mmd2, detector_auroc (several rows per cell, e.g.
    datasets or seeds, are shown as mean with error bar)."""
    nets = _ordered(df["net"])
    palette = dict(zip(nets, sns.color_palette("deep", len(nets))))
    modules = sorted(df["module"].unique())
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, column, label in ((left, "mmd2", "MMD$^2$ (RBF, median bandwidth)"),
                              (right, "detector_auroc", "detector AUROC (held-out images)")):
        sns.barplot(df, x="module", y=column, hue="net", hue_order=nets, order=modules, palette=palette, ax=ax,
                    errorbar=("pi", 100) if df.groupby(["net", "module"]).size().max() > 1 else None)
        ax.set_xlabel("module")
        ax.set_ylabel(label)
    right.axhline(0.5, color="0.3", ls="--", lw=1, label="chance (0.5)")
    right.set_ylim(0.4, 1.02)
    for ax in (left, right):
        ax.legend(title="pretrained net", loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)
