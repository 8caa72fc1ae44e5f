"""Paper Fig. 7: layer-wise re-initialisation robustness (rewind / redraw one layer, no retraining)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .style import (
    FULL_WIDTH,
    METRICS,
    MIN_FONT,
    _accuracy_axis,
    _curve,
    _figure,
    _legend,
    _module_axis,
    _plain,
    _pretraining_title,
    _styled,
    _suptitle,
    _uncertainty_handles,
    attack_text,
    dataset_label,
    over_seeds,
    run_text,
)

# operation -> (line style of the legend only: layers are categories, no lines join them), marker, text, x offset
OPERATIONS = {"rewind": ("-", "o", "rewound to epoch 0", -0.15), "redraw": (":", "^", "redrawn at random", 0.15)}


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
        for operation, (ls, marker, _, dx) in OPERATIONS.items():
            points = sub[sub["operation"] == operation].assign(x=lambda d: d["x"] + dx)  # side by side
            _curve(ax, points, "x", metric, color=color, ls=ls, marker=marker, lw=0.9)  # categories: grid None
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
    """Paper Fig. 7: clean and robust accuracy (markers with 95% Wilson error bars; the layers are categories, so
    no lines join them) after re-initialising each layer alone, no retraining: circles = rewound to its epoch-0
    values, triangles = redrawn at random, side by side. x = the layers in forward
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
        for operation, (_, marker, text, _) in OPERATIONS.items():
            handles.append(Line2D([], [], color=color, ls="none", marker=marker, label=f"{metric_name}, {text}"))
    handles.append(Line2D([], [], color="0.3", marker="D", ms=3.5, ls="-", lw=0.5, label="original net (none)"))
    handles += _uncertainty_handles(table)
    _legend(fig, handles, ncol=4)
    _suptitle(fig, f"Layer-wise re-initialisation robustness (no retraining): {run_text(info, table)}")
    return fig
