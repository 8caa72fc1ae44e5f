"""Every figure of the pipeline (paper Figs. 2-8 and the feature-divergence summary), publication-ready.

Each `*_figure(table, info=None)` takes a result table (docs/protocol.md "Tables") and the workflow's `info` dict (what
the config that ran says: dataset, arch(s), width, attack settings, recipe, ...; see workflow/rules/figures.smk)
and returns a matplotlib Figure; `save_figure` writes it as PNG and PDF (atomically) and closes it.
`FIGURES` maps a figure kind to its function.

Conventions, the same in every figure:

* Sizes for a paper: full width 7 in (`FULL_WIDTH`) or one column 3.3 in (`COLUMN_WIDTH`); fonts 6.5-8 pt;
  TrueType fonts in the PDF (`pdf.fonttype` 42, no Type 3).
* Colour-blind-safe Okabe-Ito colours: clean = blue, robust / adversarial = vermillion (never red/green), and a
  second cue besides colour (line style, marker, hatch).
* Uncertainty: lines are the mean over training seeds; shaded bands / error bars span the 95% Wilson intervals
  of the table's `*_lo` / `*_hi` columns (with several seeds, from the lowest lower to the highest upper bound
  of the seeds); with several seeds every seed is also drawn as a faint marker.
* Accuracy axes run from -0.02 to 1.02, so a curve at exactly 0 (or 1) stays visible.
* Legends sit outside the axes, in their own row below them (constrained layout); titles come from `info`.
"""

# Length: one function per paper figure plus the style they share (sizes, fonts, palette, legends).

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..io import atomic_write  # noqa: E402

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
CONDITIONS = {"clean": OKABE_ITO["blue"], "adversarial": OKABE_ITO["vermillion"]}
NET_STYLE = {"conventional": (OKABE_ITO["sky"], None), "adversarial": (OKABE_ITO["purple"], "////")}
ARCH_COLORS = [OKABE_ITO[c] for c in ("blue", "orange", "green", "purple", "sky", "vermillion", "black")]
from ..grid.vocabulary import DIRECTIONS, PRETRAININGS  # noqa: E402 (standard library only)

MODULE_NAMES = tuple(f"m{i}" for i in range(6))
ARCH_LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "vgg11_bn": "VGG-11-BN", "vgg16_bn": "VGG-16-BN"}
DATASET_LABELS = {"mnist5k": "MNIST-5k", "digits": "Digits", "cifar10": "CIFAR-10", "imagenette": "Imagenette",
                  "imagenet": "ImageNet"}
METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "trimap": "TriMap"}
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


def attack_text(attack: dict | None = None, table: pd.DataFrame | None = None, *, n: bool = True) -> str:
    """'PGD-10, ε = 8/255, n = 1000' from the eval settings dict (info["attack"]), else from the table;
    n=False leaves out the number of test images (figures of other images)."""
    if attack:
        name = f"{str(attack.get('attack', 'pgd')).upper()}-{attack.get('steps', '?')}"
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


def _curve(ax, df: pd.DataFrame, x: str, metric: str, *, color, ls="-", marker="o", band=True, lw=None,
           label=None) -> None:
    """Mean over seeds as a line with markers, its Wilson band, and each seed as a faint marker."""
    if df.empty:
        return
    agg = over_seeds(df, [x], metric)
    xs = agg[x].astype(float).to_numpy()
    if band:
        ax.fill_between(xs, agg["lo"], agg["hi"], color=color, alpha=BAND_ALPHA, lw=0, zorder=1)
    ax.plot(xs, agg["mean"], ls=ls, marker=marker, color=color, lw=lw, zorder=3, label=label)
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


def _opposite(pretraining: str) -> str:
    return "conventional" if pretraining == "adversarial" else "adversarial"


# --------------------------------------------------------------------------- Fig. 2-4: module cut-off

SETTINGS = (
    ("conventional", "before", "(i) Adversarial retraining before the cut-off"),
    ("conventional", "after", "(ii) Adversarial retraining after the cut-off"),
    ("adversarial", "before", "(iii) Conventional retraining before the cut-off"),
    ("adversarial", "after", "(iv) Conventional retraining after the cut-off"),
)


@_styled
def cutoff_figure(table: pd.DataFrame, info: dict | None = None):
    """Paper Figs. 2-4: four panels, settings (i)-(iv) (conventionally pretrained net retrained adversarially
    before / after the cut-off, adversarially pretrained net retrained conventionally before / after it);
    x = cut-off c (0..6), y = accuracy; one colour per arch, clean solid / robust dashed with Wilson bands;
    dotted / dash-dotted horizontal lines: the pretrained net the setting starts from (table rows with
    direction 'none' or, failing those, cell 'pretrained'). 7 in wide.

    `table`: the `cutoff` table; only `info["dataset"]` is drawn when given; `info["archs"]` sets the order."""
    table = _plain(table)
    info = info or {}
    if info.get("dataset") and "dataset" in table:
        table = table[table["dataset"] == info["dataset"]]
    archs = [a for a in (info.get("archs") or []) if a in set(table["arch"])] or _ordered(table["arch"], [])
    colors = dict(zip(archs, ARCH_COLORS))
    fig, axes = _figure(FULL_WIDTH, 4.7, 2, 2, sharex=True, sharey=True)
    cutoffs = pd.to_numeric(table["cutoff"], errors="coerce")
    for ax, (pretraining, direction, panel_title) in zip(axes.flat, SETTINGS):
        mine = table[table["pretraining"] == pretraining]
        cells = mine[(mine["direction"] == direction) & cutoffs.loc[mine.index].notna()].assign(
            cutoff=lambda d: d["cutoff"].astype(float))
        ref = mine[mine["direction"] == "none"]
        if ref.empty:
            ref = mine[mine["cell"] == "pretrained"].drop_duplicates(["arch", "seed"])
        for arch in archs:
            color = colors[arch]
            for metric, (_, _, ls, marker) in METRICS.items():
                _curve(ax, cells[cells["arch"] == arch], "cutoff", metric, color=color, ls=ls, marker=marker)
                pre = over_seeds(ref[ref["arch"] == arch], ["arch"], metric) if len(ref[ref["arch"] == arch]) else None
                if pre is not None:
                    ax.axhline(pre["mean"].iloc[0], color=color, lw=0.8, ls=":" if metric == "clean_acc" else "-.",
                               alpha=0.9, zorder=2)
                    ax.axhspan(pre["lo"].iloc[0], pre["hi"].iloc[0], color=color, alpha=0.07, lw=0, zorder=0)
        retrained = "m0…m(c−1)" if direction == "before" else "m(c)…m5"
        ax.set_title(f"{panel_title}\n({pretraining}ly pretrained net; {retrained} retrained)")
        ax.set_xlim(-0.3, 6.3)
        ax.set_xticks(range(7))
        _accuracy_axis(ax, "accuracy" if ax in axes[:, 0] else None)
        if ax in axes[-1]:
            ax.set_xlabel("cut-off c")
        ax.tick_params(labelbottom=True)
    attack = attack_text(info.get("attack"), table)
    handles = [Line2D([], [], color=colors[a], lw=2.5, label=arch_label(a)) for a in archs]
    handles += _metric_handles(attack, color="0.3")
    handles += [Line2D([], [], color="0.3", ls=":", lw=0.8, label="only pretrained, clean"),
                Line2D([], [], color="0.3", ls="-.", lw=0.8, label="only pretrained, robust")]
    handles += _uncertainty_handles(table)
    _legend(fig, handles, ncol=4)
    _suptitle(fig, f"Block-wise retraining: {run_text(info, table)}")
    return fig


# --------------------------------------------------------------------------- Fig. 5: per-layer cut-off


@_styled
def layer_cutoff_figure(table: pd.DataFrame, info: dict | None = None):
    """Paper Fig. 5: clean and robust accuracy (Wilson bands) against the layer cut-off k ('before': layers
    0..k-1 re-initialised and retrained, 'after': layers k..L-1), one panel per (pretraining, direction).
    Module boundaries from `info["module_layers"]` (layers per module, e.g. [1, 4, 5, 5, 5, 1]): faint vertical
    lines where a module starts, its name on top. Horizontal lines: the pretrained nets (cell 'pretrained',
    k = 0): dotted the conventionally, dash-dotted the adversarially pretrained one. 3.3 in wide for one
    panel, 7 in for two."""
    table = _plain(table)
    info = info or {}
    cells = table[table["direction"].isin(["before", "after"])] if "direction" in table else table
    panels = [(p, d) for p in _ordered(cells["pretraining"]) for d in _ordered(cells["direction"], DIRECTIONS)
              if len(cells[(cells["pretraining"] == p) & (cells["direction"] == d)])]
    refs = table[table["cell"] == "pretrained"] if "cell" in table else table[table["layer_cutoff"] == 0]
    module_layers = list(info.get("module_layers") or [])
    n_layers = sum(module_layers) if module_layers else int(pd.to_numeric(cells["layer_cutoff"]).max())
    width = COLUMN_WIDTH if len(panels) == 1 else FULL_WIDTH
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    fig, axes = _figure(width, 0.9 + 2.0 * nrows, nrows, ncols, sharey=True)
    ref_styles = {"conventional": ":", "adversarial": "-."}
    for ax, (pretraining, direction) in zip(axes.flat, panels):
        sub = cells[(cells["pretraining"] == pretraining) & (cells["direction"] == direction)].assign(
            layer_cutoff=lambda d: d["layer_cutoff"].astype(float))
        for metric, (_, color, ls, marker) in METRICS.items():
            _curve(ax, sub, "layer_cutoff", metric, color=color, ls=ls, marker=marker)
            for net in _ordered(refs["pretraining"]):
                ref = refs[refs["pretraining"] == net]
                if len(ref):
                    agg = over_seeds(ref, ["pretraining"], metric)
                    ax.axhline(agg["mean"].iloc[0], color=color, lw=0.8, ls=ref_styles.get(net, ":"), zorder=2)
        if module_layers:
            starts = np.concatenate([[0], np.cumsum(module_layers)])
            _module_axis(ax, [(f"m{i}", starts[i], starts[i + 1]) for i in range(len(module_layers))])
        ax.set_xlim(-0.5, n_layers + 0.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        retrained = "layers 0…k−1" if direction == "before" else "layers k…L−1"
        ax.set_title(f"{_pretraining_title(pretraining)},\n{_opposite(pretraining)} retraining of {retrained}")
        ax.set_xlabel(f"layer cut-off k ({retrained} retrained)")
        _accuracy_axis(ax, "accuracy" if ax in axes[:, 0] else None)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    attack = attack_text(info.get("attack"), table)
    handles = _metric_handles(attack)
    handles += [Line2D([], [], color="0.3", ls=ref_styles[n], lw=0.8, label=f"{n}ly pretrained net")
                for n in _ordered(refs["pretraining"]) if n in ref_styles]
    handles += _uncertainty_handles(table)
    _legend(fig, handles, ncol=2 if width == COLUMN_WIDTH else 3)
    _suptitle(fig, f"Per-layer cut-off: {run_text(info, table)}")
    return fig


# --------------------------------------------------------------------------- Fig. 6: module subsets


def _mask(value) -> str:
    if isinstance(value, str) and len(value) == len(MODULE_NAMES) and set(value) <= {"0", "1"}:
        return value
    if isinstance(value, (int, np.integer)):
        return str(value).zfill(len(MODULE_NAMES))
    names = value.replace("+", ",").split(",") if isinstance(value, str) else list(value)
    names = {n.strip() for n in names if n and n.strip() not in ("", "none")}
    return "".join("1" if m in names else "0" for m in MODULE_NAMES)


def module_summary(table: pd.DataFrame, metrics: Sequence[str] = ("clean_acc", "robust_acc")) -> pd.DataFrame:
    """Paper Fig. 6: per pretraining and module, the median and 25th / 75th percentiles of each metric over the
    module subsets that include vs exclude the module ('000000', the pretrained net, excludes every module).
    Several seeds of one subset are averaged first, so `n` counts subsets.

    `table`: the `module_subsets` table (a `subset` bitmask column, or `retrained_modules`). Returns columns
    pretraining, module, membership ('included'/'excluded'), metric, median, q25, q75, n."""
    table = _plain(table)
    masks = table["subset"].map(_mask) if "subset" in table else table["retrained_modules"].map(_mask)
    work = table.assign(_mask=masks.to_numpy())
    if "pretraining" not in work:
        work["pretraining"] = "conventional"
    per_subset = work.groupby(["pretraining", "_mask"], sort=False)[list(metrics)].mean().reset_index()
    rows = []
    for pretraining in _ordered(per_subset["pretraining"]):
        group = per_subset[per_subset["pretraining"] == pretraining]
        for i, module in enumerate(MODULE_NAMES):
            included = group["_mask"].str[i] == "1"
            for membership, selected in (("included", group[included]), ("excluded", group[~included])):
                for metric in metrics:
                    values = selected[metric].astype(float)
                    rows.append({"pretraining": pretraining, "module": module, "membership": membership,
                                 "metric": metric, "median": values.median(), "q25": values.quantile(0.25),
                                 "q75": values.quantile(0.75), "n": int(values.count())})
    return pd.DataFrame(rows, columns=["pretraining", "module", "membership", "metric", "median", "q25", "q75", "n"])


def subset_count_text(n: int) -> str:
    return "all 64 module subsets" if n == 64 else f"{n} of 64 module subsets"


@_styled
def module_subsets_figure(table: pd.DataFrame, info: dict | None = None):
    """Paper Fig. 6: per module, the median (bar) and interquartile range (error bar) of clean and robust
    accuracy over the retrained module subsets that include (filled) or exclude (hatched) it; faint dots: the
    individual subsets (mean over seeds). One panel per pretraining; the titles say how many subsets ran."""
    table = _plain(table)
    info = info or {}
    summary = module_summary(table)
    masks = table["subset"].map(_mask) if "subset" in table else table["retrained_modules"].map(_mask)
    work = table.assign(_mask=masks.to_numpy())
    pretrainings = _ordered(summary["pretraining"])
    width = COLUMN_WIDTH if len(pretrainings) == 1 else FULL_WIDTH
    fig, axes = _figure(width, 2.9, 1, len(pretrainings), sharey=True)
    bars = [(metric, membership) for metric in METRICS for membership in ("included", "excluded")]
    bar_w = 0.19
    rng = np.random.default_rng(0)
    counts = {}
    for ax, pretraining in zip(axes.flat, pretrainings):
        sub = summary[summary["pretraining"] == pretraining]
        points = work[work["pretraining"] == pretraining].groupby("_mask")[list(METRICS)].mean().reset_index()
        counts[pretraining] = len(points)
        x = np.arange(len(MODULE_NAMES))
        for i, (metric, membership) in enumerate(bars):
            part = sub[(sub["metric"] == metric) & (sub["membership"] == membership)].set_index("module")
            part = part.reindex(list(MODULE_NAMES))
            _, color, _, _ = METRICS[metric]
            excluded = membership == "excluded"
            pos = x + (i - 1.5) * bar_w
            ax.bar(pos, part["median"], bar_w * 0.92, color="white" if excluded else color, edgecolor=color,
                   hatch="/////" if excluded else None, lw=0.7, zorder=2)
            ax.errorbar(pos, part["median"], yerr=[(part["median"] - part["q25"]).clip(lower=0),
                                                      (part["q75"] - part["median"]).clip(lower=0)],
                        fmt="none", ecolor="0.15", elinewidth=0.7, capsize=1.5, capthick=0.7, zorder=4)
            for j in range(len(MODULE_NAMES)):
                inside = points["_mask"].str[j] == "1"
                vals = points.loc[inside if not excluded else ~inside, metric].astype(float).to_numpy()
                jitter = rng.uniform(-0.28, 0.28, len(vals)) * bar_w
                ax.scatter(pos[j] + jitter, vals, s=2.5, color="0.25", alpha=0.35, lw=0, zorder=3)
        ax.set_xticks(x, [f"m{i}" for i in range(len(MODULE_NAMES))])
        ax.set_xlabel("module")
        ax.set_title(f"{_pretraining_title(pretraining, _opposite(pretraining))}\n"
                     f"({counts[pretraining]} subsets incl. the pretrained net)")
        _accuracy_axis(ax, "median accuracy over subsets" if ax is axes.flat[0] else None)
    attack = attack_text(info.get("attack"), table)
    robust = f"robust ({attack.split(',')[0]})"
    blue, vermillion = METRICS["clean_acc"][1], METRICS["robust_acc"][1]
    handles = [Patch(facecolor=blue, edgecolor=blue, label="clean, module retrained"),
               Patch(facecolor="white", edgecolor=blue, hatch="/////", label="clean, not retrained"),
               Patch(facecolor=vermillion, edgecolor=vermillion, label=f"{robust}, module retrained"),
               Patch(facecolor="white", edgecolor=vermillion, hatch="/////", label=f"{robust}, not retrained"),
               Line2D([], [], color="0.15", marker="_", ms=5, ls="none", label="25th-75th percentile"),
               Line2D([], [], color="0.25", alpha=0.6, marker="o", ms=2, ls="none",
                      label="one subset (mean over seeds)")]
    _legend(fig, handles, ncol=2 if width == COLUMN_WIDTH else 3)
    n = max(counts.values()) if counts else 0
    _suptitle(fig, f"Module subsets: {subset_count_text(n)} retrained; {run_text(info, table)}")
    return fig


# --------------------------------------------------------------------------- Fig. 7: re-initialisation

OPERATIONS = {"rewind": ("-", "o", "rewound to epoch 0"), "redraw": (":", "^", "redrawn at random")}


def _reinit_panel(ax, table, key, keys, layers, pos, many_datasets) -> None:
    """One Fig. 7 panel: both operations x both metrics with bands, the original net, module spans."""
    values = dict(zip(keys, key))
    mask = np.ones(len(table), bool)
    for k, v in values.items():
        mask &= (table[k] == v).fillna(False).to_numpy()
    sub = table[mask].assign(x=lambda d: d["layer_index"].map(lambda i: pos.get(int(i), np.nan)))
    original = sub[sub["operation"] == "none"]
    if original.empty:  # the original net was evaluated once per pretraining, not per policy
        others = table[(table["operation"] == "none") & (table["pretraining"] == values.get("pretraining"))]
        original = others.assign(x=0.0)
    for metric, (_, color, _, _) in METRICS.items():
        for operation, (ls, marker, _) in OPERATIONS.items():
            _curve(ax, sub[sub["operation"] == operation], "x", metric, color=color, ls=ls, marker=marker,
                   lw=0.9)
        if len(original):
            agg = over_seeds(original, ["operation"], metric)
            mean, lo, hi = agg["mean"].iloc[0], agg["lo"].iloc[0], agg["hi"].iloc[0]
            ax.axhline(mean, color=color, lw=0.5, alpha=0.6, zorder=1)
            ax.errorbar([0], [mean], yerr=[[max(mean - lo, 0)], [max(hi - mean, 0)]], fmt="D", color=color, ms=3.5,
                        elinewidth=0.8, capsize=1.5, zorder=4)
    if "module" in layers and len(layers):
        spans = []
        for module, group in layers.groupby("module", sort=False):
            xs = [pos[int(i)] for i in group["layer_index"]]
            spans.append((str(module), min(xs) - 0.5, max(xs) + 0.5))
        _module_axis(ax, spans)
    title = _pretraining_title(values.get("pretraining", "?"))
    if "bn_policy" in values:
        title += ("; BatchNorm reset with the layer" if values["bn_policy"] == "reset"
                  else "; BatchNorm running statistics kept")
    if many_datasets:
        title = f"{dataset_label(values['dataset'])}: {title}"
    ax.set_title(title, loc="left")
    _accuracy_axis(ax)


@_styled
def reinit_figure(table: pd.DataFrame, info: dict | None = None):
    """Paper Fig. 7: clean and robust accuracy (Wilson bands) after re-initialising each layer alone, no
    retraining: solid = rewound to its epoch-0 values, dotted = redrawn at random. x = the layers in forward
    order, labelled with their torchvision names, module names on top; 'none' = the original net (point with
    error bar and a thin horizontal line across). One panel per (pretrained net, BatchNorm policy) (and
    dataset, when the table has several), stacked; 7 in wide."""
    table = _plain(table)
    info = info or {}
    keys = [k for k in ("dataset", "pretraining", "bn_policy") if k in table]
    order = {"conventional": 0, "adversarial": 1, "reset": 0, "keep_stats": 1}
    panel_list = sorted({tuple(r) for r in table[keys].dropna().itertuples(index=False)},
                        key=lambda t: tuple((order.get(v, 9), str(v)) for v in t))
    columns = [c for c in ("layer_index", "layer", "module") if c in table]
    layers = (table.loc[table["layer_index"] >= 0, columns].drop_duplicates("layer_index")
              .sort_values("layer_index"))
    pos = {int(i): p + 1 for p, i in enumerate(layers["layer_index"])}
    pos[-1] = 0
    labels = ["none"] + [str(name) for name in layers["layer"]]
    nrows = max(len(panel_list), 1)
    fig, axes = _figure(FULL_WIDTH, 1.3 + 1.55 * nrows, nrows, 1, sharex=True, sharey=True)
    many_datasets = "dataset" in table and table["dataset"].nunique() > 1
    for ax, key in zip(axes[:, 0], panel_list):
        _reinit_panel(ax, table, key, keys, layers, pos, many_datasets)
    for ax in axes[:, 0]:
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(range(len(labels)))
    axes[-1, 0].set_xticklabels(labels, rotation=90, fontsize=MIN_FONT)
    axes[-1, 0].set_xlabel("re-initialised layer (torchvision name; none = the original net)")
    attack = attack_text(info.get("attack"), table)
    handles = []
    for metric, (name, color, _, _) in METRICS.items():
        metric_name = "clean" if metric == "clean_acc" else f"robust ({attack.split(',')[0]})"
        for operation, (ls, marker, text) in OPERATIONS.items():
            handles.append(Line2D([], [], color=color, ls=ls, marker=marker, lw=0.9, label=f"{metric_name}, {text}"))
    handles.append(Line2D([], [], color="0.3", marker="D", ms=3.5, ls="-", lw=0.5, label="original net (none)"))
    handles += _uncertainty_handles(table)
    _legend(fig, handles, ncol=4)
    _suptitle(fig, f"Layer-wise re-initialisation robustness (no retraining): {run_text(info, table)}")
    return fig


# --------------------------------------------------------------------------- Fig. 8: feature embeddings


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


# --------------------------------------------------------------------------- feature divergence (beyond Fig. 8)


@_styled
def feature_divergence_figure(table: pd.DataFrame, info: dict | None = None, *, alpha: float = 0.05):
    """How different clean and adversarial activation vectors are, per module, conventionally vs adversarially
    pretrained net side by side. Left: MMD^2 (bars, mean over seeds; dots = seeds), '*' where the MMD
    permutation test gives p < `alpha` (in every seed). Right: held-out detector AUROC with its bootstrap 95%
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
    top = float(table["mmd2"].max()) if len(table) else 1.0
    for i, net in enumerate(nets):
        color, hatch = NET_STYLE.get(net, (OKABE_ITO["grey"], None))
        sub = table[table["pretraining"] == net]
        pos = x + (i - (len(nets) - 1) / 2) * width
        mmd = sub.groupby("module")["mmd2"].mean().reindex(modules)
        pmax = sub.groupby("module")["mmd_p_value"].max().reindex(modules)
        left.bar(pos, mmd, width * 0.9, color=color, edgecolor="0.2", hatch=hatch, lw=0.5, zorder=2)
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
    handles = [Patch(facecolor=NET_STYLE.get(n, (OKABE_ITO["grey"], None))[0], edgecolor="0.2",
                     hatch=NET_STYLE.get(n, (None, None))[1], label=f"{n}ly pretrained net") for n in nets]
    every = " (every seed)" if multi else ""
    handles += [Line2D([], [], ls="none", marker="$*$", color="k", ms=4,
                       label=f"MMD permutation test p < {alpha:g}{every}"),
                Line2D([], [], color="0.3", ls="--", lw=0.8, label="chance (AUROC 0.5)"),
                Line2D([], [], color="0.3", marker="o", ms=3, lw=0.9, label="AUROC, bootstrap 95% interval")]
    if multi:
        handles.append(Line2D([], [], ls="none", marker="o", ms=3, color="0.2", alpha=0.6, label="single seed"))
    _legend(fig, handles, ncol=3)
    _suptitle(fig, f"Clean vs adversarial activation vectors: {run_text(info, table, n=False)}"
                   f"{_images_text(info, table)}")
    return fig


# --------------------------------------------------------------------------- dispatch

FIGURES = {
    "cutoff": cutoff_figure,
    "layer_cutoff": layer_cutoff_figure,
    "module_subsets": module_subsets_figure,
    "reinit": reinit_figure,
    "features": features_figure,
    "feature_divergence": feature_divergence_figure,
}
