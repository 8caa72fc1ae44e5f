"""Every figure of the pipeline (paper Figs. 2-8 and the feature-divergence summary), publication-ready.

Each `*_figure(table, info=None)` takes a result table (docs/protocol.md "Tables") and the workflow's `info` dict (what
the config that ran says: dataset, arch(s), width, attack settings, recipe, ...; see workflow/rules/figures.smk)
and returns a matplotlib Figure; `save_figure` writes it as PNG and PDF (atomically) and closes it.
`FIGURES` maps a figure kind to its function.

style           what every figure shares: sizes, fonts, palette, labels and titles, drawing helpers, `save_figure`
cutoff          Figs. 2-4: module cut-off
layer_cutoff    Fig. 5: per-layer cut-off
module_subsets  Fig. 6: module subsets (`module_summary`: the medians it draws)
reinit          Fig. 7: layer-wise re-initialisation
features        Fig. 8: embeddings of clean and adversarial activation vectors
divergence      beyond Fig. 8: MMD and detector AUROC, clean vs adversarial, per module
training_curves no paper figure: per-epoch training loss and accuracy of every trained net
"""

from __future__ import annotations

from .cutoff import cutoff_figure
from .divergence import feature_divergence_figure
from .features import features_figure
from .layer_cutoff import layer_cutoff_figure
from .module_subsets import module_subsets_figure
from .reinit import reinit_figure
from .style import save_figure
from .training_curves import training_curves_figure

__all__ = ["FIGURES", "save_figure"]

FIGURES = {
    "cutoff": cutoff_figure,
    "layer_cutoff": layer_cutoff_figure,
    "module_subsets": module_subsets_figure,
    "reinit": reinit_figure,
    "features": features_figure,
    "feature_divergence": feature_divergence_figure,
    "training_curves": training_curves_figure,
}
