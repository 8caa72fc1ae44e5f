"""Figures. `cutoff_figure`: the paper's Fig. 2 layout from a cut-off table (advlayers.tables.cutoff_table)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# (pretraining, direction) -> panel title; the paper's settings (i)-(iv), §4.
SETTINGS = (
    ("conventional", "before", "(i) Adversarial retraining before cut-off\n(conventionally pretrained)"),
    ("conventional", "after", "(ii) Adversarial retraining after cut-off\n(conventionally pretrained)"),
    ("adversarial", "before", "(iii) Conventional retraining before cut-off\n(adversarially pretrained)"),
    ("adversarial", "after", "(iv) Conventional retraining after cut-off\n(adversarially pretrained)"),
)
ARCH_LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "vgg11_bn": "VGG-11-BN", "vgg16_bn": "VGG-16-BN"}


def cutoff_figure(table, *, title: str | None = None, archs: list[str] | None = None):
    """Four panels (settings i-iv): x = cut-off, y = accuracy; one colour per arch, clean solid, robust dashed.

    Thin dotted (clean) and dash-dotted (robust) horizontal lines mark the pretrained net that the setting
    starts from ("only pretrained").
    """
    archs = list(archs) if archs is not None else sorted(table["arch"].unique())
    colors = dict(zip(archs, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), sharey=True, constrained_layout=True)
    attack = ", ".join(sorted(table["attack"].dropna().unique())) or "attack"
    for ax, (pretraining, direction, panel_title) in zip(axes, SETTINGS):
        cells = table[(table["pretraining"] == pretraining) & (table["direction"] == direction)]
        ref = table[(table["pretraining"] == pretraining) & (table["retraining"] == "none")]
        cutoffs = sorted(int(c) for c in cells["cutoff"].dropna().unique())
        for arch in archs:
            color = colors[arch]
            rows = cells[cells["arch"] == arch].sort_values("cutoff")
            x = rows["cutoff"].astype(int)
            ax.plot(x, rows["clean_acc"], "-o", color=color, ms=4)
            ax.plot(x, rows["robust_acc"], "--s", color=color, ms=4)
            pre = ref[ref["arch"] == arch]
            if len(pre):
                ax.axhline(pre["clean_acc"].iloc[0], color=color, ls=":", lw=1.2, alpha=0.8)
                ax.axhline(pre["robust_acc"].iloc[0], color=color, ls="-.", lw=1.2, alpha=0.8)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(f"cut-off (modules {'m0..m(c-1)' if direction == 'before' else 'm(c)..m5'} retrained)")
        if cutoffs:
            ax.set_xticks(cutoffs)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles = [Line2D([], [], color=colors[a], lw=2, label=ARCH_LABELS.get(a, a)) for a in archs]
    handles += [
        Line2D([], [], color="k", ls="-", marker="o", ms=4, label="clean"),
        Line2D([], [], color="k", ls="--", marker="s", ms=4, label=f"robust ({attack})"),
        Line2D([], [], color="k", ls=":", label="only pretrained, clean"),
        Line2D([], [], color="k", ls="-.", label="only pretrained, robust"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, *paths: str | os.PathLike, dpi: int = 150) -> None:
    """Save `fig` to each path (format from the suffix) through a temporary name, then close it."""
    for path in paths:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    plt.close(fig)
