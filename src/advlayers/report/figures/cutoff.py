"""Paper Figs. 2-4: module cut-off, one panel per setting (i)-(iv)."""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from ...grid.vocabulary import NUM_MODULES, is_module_cell, known_archs, num_modules

from .style import (
    ARCH_COLORS,
    FULL_WIDTH,
    METRICS,
    _accuracy_axis,
    _curve,
    _figure,
    _legend,
    _metric_handles,
    _ordered,
    _plain,
    _styled,
    _suptitle,
    _uncertainty_handles,
    arch_label,
    attack_text,
    over_seeds,
    run_text,
)



def arch_modules(table: pd.DataFrame, arch: str) -> int:
    """N of an arch drawn (cut-offs 0..N): the vocabulary's (6 for the paper's archs), else its module cells'."""
    if arch in known_archs():
        return num_modules(arch)
    cells = table.loc[table["arch"] == arch, "cell"] if "cell" in table else ()
    sizes = {len(c) - 1 for c in cells if isinstance(c, str) and is_module_cell(c)}
    return max(sizes) if sizes else NUM_MODULES

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
    x = cut-off c (0..N, N = 6 for the paper's archs, the widest drawn arch's modules), y = accuracy; one colour per arch, markers at the measured cut-offs, clean solid / robust dashed
    lines only between neighbouring measured cut-offs, 95% Wilson bands (error bars where a cut-off stands alone);
    dotted / dash-dotted horizontal lines: the pretrained net the setting starts from (table rows with
    direction 'none' or, failing those, cell 'pretrained'). 7 in wide.

    `table`: the `cutoff` table; only `info["dataset"]` is drawn when given; `info["archs"]` sets the order."""
    table = _plain(table)
    info = info or {}
    if info.get("dataset") and "dataset" in table:
        table = table[table["dataset"] == info["dataset"]]
    archs = [a for a in (info.get("archs") or []) if a in set(table["arch"])] or _ordered(table["arch"], [])
    colors = dict(zip(archs, ARCH_COLORS))
    n_modules = {arch: arch_modules(table, arch) for arch in archs}
    widest = max(n_modules.values(), default=NUM_MODULES)
    last = f"m{widest - 1}" if len(set(n_modules.values())) <= 1 else "m(N−1)"
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
                _curve(ax, cells[cells["arch"] == arch], "cutoff", metric, color=color, ls=ls, marker=marker,
                       grid=range(n_modules[arch] + 1))
                pre = over_seeds(ref[ref["arch"] == arch], ["arch"], metric) if len(ref[ref["arch"] == arch]) else None
                if pre is not None:
                    ax.axhline(pre["mean"].iloc[0], color=color, lw=0.8, ls=":" if metric == "clean_acc" else "-.",
                               alpha=0.9, zorder=2)
                    ax.axhspan(pre["lo"].iloc[0], pre["hi"].iloc[0], color=color, alpha=0.07, lw=0, zorder=0)
        retrained = "m0…m(c−1)" if direction == "before" else f"m(c)…{last}"
        ax.set_title(f"{panel_title}\n({pretraining}ly pretrained net; {retrained} retrained)")
        ax.set_xlim(-0.3, widest + 0.3)
        ax.set_xticks(range(widest + 1))
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
