"""Paper Fig. 5: per-layer cut-off, module boundaries on top."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ...grid.vocabulary import DIRECTIONS, opposite
from .style import (
    COLUMN_WIDTH,
    FULL_WIDTH,
    METRICS,
    _accuracy_axis,
    _curve,
    _figure,
    _legend,
    _metric_handles,
    _module_axis,
    _ordered,
    _plain,
    _pretraining_title,
    _styled,
    _suptitle,
    _uncertainty_handles,
    attack_text,
    over_seeds,
    run_text,
)


@_styled
def layer_cutoff_figure(table: pd.DataFrame, info: dict | None = None):
    """Paper Fig. 5: clean and robust accuracy (markers at the measured k; lines only between neighbouring k,
    never across cut-offs that were not run; 95% Wilson bands or error bars) against the layer cut-off k ('before': layers
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
            _curve(ax, sub, "layer_cutoff", metric, color=color, ls=ls, marker=marker, grid=range(n_layers + 1))
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
        ax.set_title(f"{_pretraining_title(pretraining)},\n{opposite(pretraining)} retraining of {retrained}")
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
