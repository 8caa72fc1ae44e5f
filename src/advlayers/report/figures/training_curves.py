"""Training curves (no paper figure): per-epoch training loss and accuracy of the pretrained nets and of every
retraining cell, and - where the run evaluated after each epoch (config `eval_each_epoch`) - their clean and robust
accuracy on held-out tuning images, to see whether each training converged."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .style import (
    COLUMN_WIDTH,
    FULL_WIDTH,
    NBSP,
    SEED_ALPHA,
    _eps_text,
    _figure,
    _legend,
    _ordered,
    _plain,
    _styled,
    _suptitle,
    arch_label,
    dataset_label,
    seeds_text,
)

PRETRAINED = "pretrained"
# rows: (metrics drawn, solid then dashed), y label
ROWS = ((("loss",), "training loss"), (("train_acc",), "training accuracy"))
HELDOUT_ROW = (("heldout_clean_acc", "heldout_robust_acc"), "held-out accuracy\n(tuning images)")
MAX_LABELLED_CELLS = 8  # more cells: coloured along a colour map, the legend names the first and the last


def _cell_colors(cells: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("viridis")
    n = max(len(cells) - 1, 1)
    return {c: cmap(0.9 * i / n) for i, c in enumerate(cells)}


def _draw_panel(ax, sub: pd.DataFrame, metric: str, colors: dict, ls: str = "-") -> None:
    """seaborn.lineplot per cell: the mean over seeds at each recorded epoch (markers), each seed a faint line;
    epochs run 1, 2, ... without gaps (`report.training_curves.history_rows`) and every epoch of a run is
    evaluated or none is, so a line joins only measured neighbours."""
    sub = sub[sub[metric].notna()].assign(_pretrained=lambda d: d["cell"] == PRETRAINED)
    if sub.empty:
        return
    common = dict(data=sub, x="epoch", y=metric, hue="cell", palette={**colors, PRETRAINED: "black"}, legend=False,
                  ax=ax, ls=ls)
    if sub["seed"].nunique() > 1:
        sns.lineplot(**common, units="seed", estimator=None, lw=0.5, alpha=SEED_ALPHA * 0.6, zorder=1)
    sns.lineplot(**common, errorbar=None, size="_pretrained", sizes={True: 1.4, False: 0.9}, marker="o", ms=2.2,
                 mec="none", zorder=2)
    ax.set(xlabel="", ylabel="")  # the figure labels the outer axes only
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y")
    if metric != "loss":
        ax.set_ylim(-0.02, 1.02)


def _handles(cells: list[str], colors: dict, several_seeds: bool) -> list:
    handles = [Line2D([], [], color="black", lw=1.4, marker="o", ms=2.2, label="pretrained net")]
    shown = cells if len(cells) <= MAX_LABELLED_CELLS else [cells[0], cells[-1]]
    for c in shown:
        label = f"retrained cell {c}" if len(cells) <= MAX_LABELLED_CELLS else \
            f"retrained cell {c} ({'first' if c == cells[0] else 'last'} of {len(cells)}, colour map in between)"
        handles.append(Line2D([], [], color=colors[c], lw=0.9, marker="o", ms=2.2, label=label))
    if several_seeds:
        handles.append(Line2D([], [], color="0.4", lw=0.5, alpha=SEED_ALPHA, label="single seed (lines: mean)"))
    return handles


def _heldout_handles(table: pd.DataFrame) -> list:
    """Legend entries of the held-out row: clean solid, robust dashed, with the attack and images it used."""
    rows = table[table["heldout_robust_acc"].notna()]
    settings = sorted({(str(a), float(e), int(n)) for a, e, n in
                       rows[["heldout_attack", "heldout_eps", "heldout_n"]].itertuples(index=False)})
    attack = "; ".join(f"{a}, ε{NBSP}={NBSP}{_eps_text(e)}, {n} tuning images" for a, e, n in settings)
    return [Line2D([], [], color="0.3", lw=0.9, label="held-out clean accuracy"),
            Line2D([], [], color="0.3", lw=0.9, ls="--", label=f"held-out robust accuracy ({attack})")]


@_styled
def training_curves_figure(table: pd.DataFrame, info: dict | None = None):
    """Training loss (top row), training accuracy and - where the table has them (config `eval_each_epoch`) - the
    held-out clean (solid) and robust (dashed) accuracy on tuning images against the epoch; one column per
    (dataset, arch, pretraining): the pretrained net (black) and every cell retrained from it (a colour per
    cell); markers at the recorded epochs, lines the mean over seeds, faint lines the single seeds."""
    table = _plain(table)
    if not len(table):
        raise ValueError("the training-curves table has no rows: no net of the run recorded a training history "
                         "(imported published weights only?)")
    panels = [(d, a, p) for d in _ordered(table["dataset"], ()) for a in _ordered(table["arch"], ())
              for p in _ordered(table["pretraining"])
              if len(table[(table["dataset"] == d) & (table["arch"] == a) & (table["pretraining"] == p)])]
    cells = sorted(c for c in table["cell"].unique() if c != PRETRAINED)
    colors = _cell_colors(cells)
    heldout = "heldout_robust_acc" in table and table["heldout_robust_acc"].notna().any()
    rows = ROWS + ((HELDOUT_ROW,) if heldout else ())
    width = COLUMN_WIDTH if len(panels) == 1 else FULL_WIDTH
    fig, axes = _figure(width, 1.7 * len(rows), len(rows), len(panels), sharex="col", sharey="row")
    for j, (dataset, arch, pretraining) in enumerate(panels):
        sub = table[(table["dataset"] == dataset) & (table["arch"] == arch) & (table["pretraining"] == pretraining)]
        for i, (metrics, label) in enumerate(rows):
            for metric, ls in zip(metrics, ("-", "--")):
                _draw_panel(axes[i, j], sub, metric, colors, ls)
            axes[i, j].set_ylabel(label if j == 0 else "")
        head = f"{pretraining}ly pretrained" if len(panels) < 3 else pretraining
        where = f"{dataset_label(dataset)}, {arch_label(arch)}: " if len(panels) > 2 else ""
        axes[0, j].set_title(f"{where}{head}")
        axes[-1, j].set_xlabel("epoch")
    handles = _handles(cells, colors, table["seed"].nunique() > 1) + (_heldout_handles(table) if heldout else [])
    _legend(fig, handles, ncol=2 if width == COLUMN_WIDTH else 3)
    nets = ", ".join(sorted({f"{dataset_label(d)} {arch_label(a)}" for d, a, _ in panels}))
    _suptitle(fig, f"Training curves: {nets}, {seeds_text(table)}")
    return fig
