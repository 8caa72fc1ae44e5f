from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers import analysis_plots
from advlayers.analyses import combination_summary, layer_table
from advlayers.models import build_model

kind, cfg, out = snakemake.params.kind, snakemake.params.cfg, snakemake.output
if kind == "layer_cutoff":
    table = pd.read_parquet(snakemake.input.table)
    retrained = table[table["retraining"] != "none"]
    reference = table[table["retraining"] == "none"].assign(label=lambda d: d["pretraining"] + " pretrained")
    info = layer_table(build_model(cfg["arch"], 10, 32))  # layer structure only: classes/size do not matter
    analysis_plots.plot_layer_cutoff(
        retrained, out.png, out.pdf, layer_info=info, reference=reference, panel=None,
        title=f"Per-layer cut-off: adversarial retraining of layers 0..k-1, conventional {cfg['arch']} ({cfg['dataset']})")
elif kind == "combinations":
    table = pd.read_parquet(snakemake.input.table)
    summary = combination_summary(table)
    analysis_plots.plot_combinations(
        summary, out.png, out.pdf, panel=None,
        title=f"All 64 module subsets adversarially retrained, conventional {cfg['arch']} ({cfg['dataset']}): "
              "median accuracy with / without each module")
elif kind == "reinit":
    analysis_plots.plot_reinit(pd.read_parquet(snakemake.input.table), out.png, out.pdf,
                               title=f"Layer-wise re-initialisation robustness, {cfg['arch']} (BN policy: {cfg['bn_policy']})")
elif kind == "features":
    embeddings = pd.concat([pd.read_parquet(p) for p in snakemake.input.parts], ignore_index=True)
    method = {"tsne": "t-SNE", "umap": "UMAP", "trimap": "TriMap"}[snakemake.wildcards.method]
    analysis_plots.plot_feature_embeddings(
        embeddings, out.png, out.pdf, method=method,
        title=f"{method} of activation vectors, clean (green) vs PGD (red), {cfg['arch']} on {cfg['dataset']}")
elif kind == "feature_divergence":
    analysis_plots.plot_feature_divergence(pd.read_parquet(snakemake.input.table), out.png, out.pdf)
else:
    raise ValueError(f"unknown figure kind {kind!r}")
log.info("wrote %s and %s", out.png, out.pdf)
