"""What every figure shares: sizes, fonts, palette, labels and titles, drawing helpers, and saving.

Conventions, the same in every figure:

* Sizes for a paper: full width 7 in (`FULL_WIDTH`) or one column 3.3 in (`COLUMN_WIDTH`); fonts 6.5-8 pt;
  TrueType fonts in the PDF (`pdf.fonttype` 42, no Type 3).
* Colour-blind-safe Okabe-Ito colours: clean = blue, robust / adversarial = vermillion, and a second cue besides
  colour (line style, marker, hatch). Fig. 8 keeps the paper's green (clean) and red (adversarial) densities as
  Okabe-Ito's bluish green and vermillion, with solid vs dashed edges.
* seaborn draws where it replaces hand-written code (Fig. 8's density levels: `kdeplot`; the training curves:
  `lineplot`); the accuracy curves keep `_curve`, since seaborn's intervals are computed from the rows drawn
  (bootstrap over seeds), not the Wilson intervals of the measured accuracies.
* Only what was measured: a marker at every measured point (the mean over training seeds); a line joins two
  points only when no position between them could have been measured (cut-offs 3 and 6 with 4, 5 not run stay
  apart; categorical axes such as Fig. 7's layers get no lines at all).
* Uncertainty: shaded bands (along joined points) and error bars (at points alone) span the 95% Wilson
  intervals of the table's `*_lo` / `*_hi` columns (with several seeds, from the lowest lower to the highest
  upper bound of the seeds); with several seeds every seed is also drawn as a faint marker. Every figure
  shows 95% intervals (Fig. 6 too); a figure that tests many things at once says its multiple-comparison
  correction.
* Accuracy axes run from -0.02 to 1.02, so a curve at exactly 0 (or 1) stays visible.
* Legends sit outside the axes, in their own row below them (constrained layout); titles come from `info`.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ...grid.vocabulary import PRETRAININGS  # noqa: E402
from ...io import atomic_write  # noqa: E402

# Embedding TrueType subsets in a PDF logs ~50 INFO lines per figure from fontTools: keep job logs readable.
logging.getLogger("fontTools").setLevel(logging.WARNING)

# --------------------------------------------------------------------------- style

FULL_WIDTH = 7.0  # inches: a two-column paper's text width
COLUMN_WIDTH = 3.3  # inches: one column
ACC_LIM = (-0.02, 1.02)

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "pdf.fonttype": 42,  # TrueType (Type 42), not Type 3
    "ps.fonttype": 42,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlepad": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.1,
    "lines.markersize": 3,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "hatch.linewidth": 0.6,
    "legend.frameon": False,
    "legend.handlelength": 2.2,
    "legend.columnspacing": 1.2,
    "figure.dpi": 100,
    "savefig.dpi": 300,
}
MIN_FONT = 6.5  # the smallest text a figure uses (annotations, tick labels)

# Okabe & Ito (2008), safe for the common colour-vision deficiencies.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "grey": "#999999"}
METRICS = {"clean_acc": ("clean", OKABE_ITO["blue"], "-", "o"),
           "robust_acc": ("robust", OKABE_ITO["vermillion"], "--", "s")}
NET_STYLE = {"conventional": (OKABE_ITO["sky"], None), "adversarial": (OKABE_ITO["purple"], "////")}
ARCH_COLORS = [OKABE_ITO[c] for c in ("blue", "orange", "green", "purple", "sky", "vermillion", "black")]

ARCH_LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "vgg11_bn": "VGG-11-BN", "vgg16_bn": "VGG-16-BN"}
DATASET_LABELS = {"mnist5k": "MNIST-5k", "digits": "Digits", "cifar10": "CIFAR-10", "imagenette": "Imagenette",
                  "imagenet": "ImageNet"}
NBSP = "\u00a0"  # keeps "ε = 0.1" on one line of a wrapped title
BAND_ALPHA = 0.18
SEED_ALPHA = 0.45


def _styled(fn: Callable) -> Callable:
    """Draw under STYLE (font sizes are fixed when the text is created)."""

    def wrapped(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapped


def save_figure(fig, png_path: str | os.PathLike, pdf_path: str | os.PathLike, *, dpi: int = 300) -> None:
    """Write `fig` as PNG and PDF, each atomically (`advlayers.io.atomic_write`), then close it. The figure
    keeps its size (no tight bounding box): 7 in or 3.3 in wide as drawn. The PDF has no creation date, so
    the same figure gives the same bytes."""
    try:
        with plt.rc_context(STYLE):
            atomic_write(png_path, lambda f: fig.savefig(f, format="png", dpi=dpi, metadata={"Software": None}))
            atomic_write(pdf_path, lambda f: fig.savefig(f, format="pdf", metadata={"CreationDate": None}))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- labels and titles


def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def dataset_label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def _eps_text(eps) -> str:
    eps = float(eps)
    k = eps * 255
    return f"{round(k)}/255" if 0 < eps < 0.2 and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _attack_name(settings: dict) -> str:
    """The attack's name as its evaluation records it (`core.evaluation.attack_from_settings`), from settings."""
    kind, steps = str(settings.get("attack", "pgd")), settings.get("steps", "?")
    if kind == "autoattack":
        return f"AutoAttack-{settings.get('version', 'standard')}"
    if kind == "apgd":
        k = settings.get("apgd_steps", 100)
        return f"PGD-{steps}+APGD-CE-{k}+APGD-DLR-{k}"
    return f"{kind.upper()}-{steps}"


def attack_text(attack: dict | None = None, table: pd.DataFrame | None = None, *, n: bool = True) -> str:
    """'PGD-10, ε = 8/255, n = 1000' from the eval settings dict (info["attack"]), else from the table;
    n=False leaves out the number of test images (figures of other images)."""
    if attack:
        name = _attack_name(attack)
        eps, n_images, restarts = attack.get("eps"), attack.get("n"), attack.get("restarts", 1)
    elif table is not None and "attack" in table and len(table):
        row = table.iloc[0]
        name, eps, restarts = str(row["attack"]), row.get("eps"), row.get("restarts", 1)
        n_images = row.get("n_eval")
    else:
        return "attack unknown"
    text = name + (f", ε{NBSP}={NBSP}{_eps_text(eps)}" if eps is not None and not pd.isna(eps) else "")
    if restarts is not None and not pd.isna(restarts) and int(restarts) > 1:
        text += f", {int(restarts)} restarts"
    if not n:
        return text
    if n_images is None or pd.isna(n_images):
        return text + ", full test set"
    return text + f", n{NBSP}={NBSP}{int(n_images)}"


def _seeds(table: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in table["seed"].dropna().unique()) if "seed" in table else []


def seeds_text(table: pd.DataFrame) -> str:
    seeds = _seeds(table)
    if not seeds:
        return ""
    if len(seeds) == 1:
        return f"seed{NBSP}{seeds[0]}"
    return f"{len(seeds)}{NBSP}seeds ({', '.join(map(str, seeds))})"


def run_text(info: dict | None, table: pd.DataFrame, *, attack: bool = True, n: bool = True) -> str:
    """'MNIST-5k, ResNet-18 (width 0.5), PGD-10, ε = 0.1, n = 500, seed 0': what ran, from info or the table."""
    info = info or {}
    dataset = info.get("dataset") or (table["dataset"].iloc[0] if "dataset" in table and len(table) else None)
    archs = info.get("archs") or ([info["arch"]] if info.get("arch") else
                                  (list(pd.unique(table["arch"])) if "arch" in table else []))
    width = info.get("width", table["width"].iloc[0] if "width" in table and len(table) else 1.0)
    parts = [dataset_label(dataset)] if dataset else []
    if archs:
        nets = ", ".join(arch_label(a) for a in archs)
        if width is not None and not pd.isna(width) and float(width) != 1.0:
            nets += f" (width {float(width):g})"
        parts.append(nets)
    if attack:
        parts.append(attack_text(info.get("attack"), table, n=n))
    if "image_part" in table and len(table) and table["image_part"].nunique() == 1 and table["image_part"].iloc[0]:
        parts.append(f"{table['image_part'].iloc[0]} images")
    seeds = seeds_text(table)
    if seeds:
        parts.append(seeds)
    return ", ".join(parts)


def _images_text(info: dict | None, table: pd.DataFrame) -> str:
    """', 150 images' of a feature analysis (config n_images, else the table's n_images column)."""
    n_images = ((info or {}).get("analysis") or {}).get("n_images")
    if n_images is None and "n_images" in table and len(table):
        n_images = table["n_images"].iloc[0]
    return f", {int(n_images)} images" if n_images is not None and not pd.isna(n_images) else ""


def _suptitle(fig, text: str) -> None:
    size = STYLE["figure.titlesize"]
    width_chars = int(fig.get_figwidth() * 72 / (0.56 * size))
    fig.suptitle(textwrap.fill(text, width_chars), fontsize=size)


# --------------------------------------------------------------------------- drawing helpers


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """The table with pandas' nullable dtypes (string, Int64, boolean) as object / float, so that comparisons
    with a missing value are False rather than <NA>."""
    out = table.copy()
    for column, dtype in table.dtypes.items():
        if isinstance(dtype, (pd.StringDtype, pd.BooleanDtype, pd.CategoricalDtype)):
            out[column] = table[column].astype(object)
        elif pd.api.types.is_extension_array_dtype(dtype) and pd.api.types.is_numeric_dtype(dtype):
            out[column] = table[column].astype("float64")
    return out.reset_index(drop=True)


def _ordered(values, preferred: Sequence = PRETRAININGS) -> list:
    """Unique values, the preferred ones first in their order, the rest as they come."""
    unique = list(pd.unique(pd.Series(list(values)).dropna()))
    return [v for v in preferred if v in unique] + [v for v in unique if v not in preferred]


def over_seeds(df: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Per `keys`: the mean of `metric` over seeds (`mean`), the envelope of the seeds' 95% Wilson intervals
    (`lo` = lowest `<metric>_lo`, `hi` = highest `<metric>_hi`) and the number of seeds (`n_seeds`)."""
    keys = list(keys)
    work = df[keys + [metric]].copy()
    work["_lo"] = df[f"{metric}_lo"] if f"{metric}_lo" in df else df[metric]
    work["_hi"] = df[f"{metric}_hi"] if f"{metric}_hi" in df else df[metric]
    work["_seed"] = df["seed"] if "seed" in df else 0
    work = work.astype({metric: float, "_lo": float, "_hi": float})
    out = work.groupby(keys, sort=True).agg(mean=(metric, "mean"), lo=("_lo", "min"), hi=("_hi", "max"),
                                            n_seeds=("_seed", "nunique"))
    return out.reset_index()


def joined_runs(xs, grid) -> list[list[int]]:
    """Indices of the sorted measured positions `xs`, in runs a line may join: two neighbours are joined only when
    `grid` (every position a run could have measured, e.g. cut-offs 0..6) has no position between them, so a
    line never crosses a position that was not run. grid None (a categorical axis): every point alone."""
    runs: list[list[int]] = []
    for i, x in enumerate(xs):
        if runs and grid is not None and not any(xs[runs[-1][-1]] < g < x for g in grid):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _curve(ax, df: pd.DataFrame, x: str, metric: str, *, color, ls="-", marker="o", band=True, lw=None,
           label=None, grid=None) -> None:
    """Mean over seeds: a marker at each measured x, its 95% Wilson interval, each seed as a faint marker.
    One line (NaN-separated) joins only neighbours with no unmeasured `grid` position between them
    (`joined_runs`; grid None: markers only, e.g. a categorical axis); the interval is a band along a joined
    run and an error bar at a point that stands alone."""
    if df.empty:
        return
    agg = over_seeds(df, [x], metric).sort_values(x)
    xs = agg[x].astype(float).to_numpy()
    mean, lo, hi = (agg[c].astype(float).to_numpy() for c in ("mean", "lo", "hi"))
    line_x, line_y, alone = [], [], []
    for run in joined_runs(xs, grid):
        if band and len(run) > 1:
            ax.fill_between(xs[run], lo[run], hi[run], color=color, alpha=BAND_ALPHA, lw=0, zorder=1)
        alone += run if len(run) == 1 else []
        line_x += [*xs[run], np.nan]
        line_y += [*mean[run], np.nan]
    if band and alone:
        ax.errorbar(xs[alone], mean[alone], yerr=[np.clip(mean[alone] - lo[alone], 0, None),
                                                  np.clip(hi[alone] - mean[alone], 0, None)],
                    fmt="none", ecolor=color, elinewidth=0.8, capsize=1.5, alpha=0.7, zorder=2)
    ax.plot(line_x[:-1], line_y[:-1], ls=ls if grid is not None else "none", marker=marker, color=color, lw=lw,
            zorder=3, label=label)
    if "seed" in df and df["seed"].nunique() > 1:
        ax.scatter(df[x].astype(float), df[metric].astype(float), s=5, marker=marker, color=color,
                   alpha=SEED_ALPHA, lw=0, zorder=2)


def _accuracy_axis(ax, label: str | None = "accuracy") -> None:
    ax.set_ylim(*ACC_LIM)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(axis="y")
    if label:
        ax.set_ylabel(label)


def _legend(fig, handles: list, ncol: int | None = None) -> None:
    """One legend for the whole figure, in its own rows below the axes: `ncol` columns, fewer where the
    legend would be wider than the figure."""
    ncol = min(ncol or 4, len(handles))
    renderer = fig.canvas.get_renderer()
    while True:
        legend = fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
                            handlelength=2.4 if fig.get_figwidth() > COLUMN_WIDTH else 1.8)
        if ncol == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()
        ncol -= 1


def _metric_handles(attack: str, *, color: str | None = None) -> list:
    """Legend entries of clean and robust accuracy: in their colours, or all in `color` where colour means
    something else (the arch in the cut-off figure)."""
    handles = []
    for metric, (name, metric_color, ls, marker) in METRICS.items():
        label = "clean accuracy" if metric == "clean_acc" else f"robust accuracy ({attack.split(',')[0]})"
        handles.append(Line2D([], [], color=color or metric_color, ls=ls, marker=marker, label=label))
    return handles


def _uncertainty_handles(table: pd.DataFrame, color: str = "0.55") -> list:
    handles = [Patch(facecolor=color, alpha=0.4, lw=0, label="95% Wilson interval")]
    if len(_seeds(table)) > 1:
        handles.append(Line2D([], [], ls="none", marker="o", ms=3, color=color, alpha=0.7, label="single seed"))
    return handles


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kwargs)
    fig.get_layout_engine().set(h_pad=0.02, w_pad=0.02, hspace=0.04, wspace=0.03)
    return fig, axes


def _module_axis(ax, spans: list[tuple[str, float, float]], *, lines: bool = True) -> None:
    """Module labels m0..m5 on a secondary x axis on top; a faint vertical line where each module starts.
    spans: (module, first x, last x) in data coordinates."""
    top = ax.secondary_xaxis("top")
    top.set_xticks([(a + b) / 2 for _, a, b in spans], [m for m, _, _ in spans])
    top.tick_params(axis="x", length=0, pad=1, labelsize=MIN_FONT, colors="0.3")
    top.spines["top"].set_visible(False)
    if lines:
        for _, a, _ in spans[1:]:
            ax.axvline(a, color="0.75", lw=0.5, zorder=0)


def _pretraining_title(pretraining: str, retraining: str | None = None) -> str:
    net = f"{pretraining}ly pretrained net" if pretraining in PRETRAININGS else f"{pretraining} net"
    return net[0].upper() + net[1:] + (f", {retraining} retraining" if retraining else "")
