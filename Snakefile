# advlayers: which layers make a network susceptible to adversarial attacks (block-wise retraining).
#
#   snakemake --cores 2 all_figures                              embedded demo (MNIST-5k, CPU; README for its time)
#   snakemake --profile slurm all_figures --configfile config/paper.yaml      the paper, on a SLURM cluster
#
# Stages: prepare_data -> pretrain -> retrain (every cell once) -> evaluate -> table -> figure -> claims.
# The grid (which cells, checkpoints and evaluations a config implies, and where each file lives) is
# src/advlayers/grid/ (plan, layout).


# The embedded demo config, unless --configfile names another: Snakemake would otherwise deep-merge the two
# (the demo's datasets would join the paper's).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    **{
        field: layout.FIELDS[field]
        for field in ("arch", "seed", "pretraining", "retraining", "group", "unit", "method")
    },
    dataset="|".join(config["datasets"]),


include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/analyses.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/verify.smk"


# --------------------------------------------------------------------------- targets


rule all_figures:
    """Every figure and table of the config, and the claims check (the default target)."""
    input:
        [p for stem in plan.figures(config) for p in layout.figure_paths(stem)],
        [layout.table_path(t) for t in plan.tables(config)],
        # what the figures are drawn from (the per-dataset cut-off tables, the embeddings): a deleted one is
        # rebuilt, and the figures with it, instead of "Nothing to be done"
        sorted({p for stem in plan.figures(config) for p in plan.figure_inputs(config, stem)}),
        rules.claims.output,
    default_target: True
    localrule: True


rule fig2:
    """Paper Fig. 2: the cut-off figure of config figures.fig2 (CIFAR-10 in config/paper.yaml)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig2")),
    localrule: True


rule fig3:
    """Paper Fig. 3: the cut-off figure of config figures.fig3 (Imagenette in config/paper.yaml)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig3")),
    localrule: True


rule fig4:
    """Paper Fig. 4: the cut-off figure of config figures.fig4 (ImageNet in config/paper.yaml)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig4")),
    localrule: True


rule fig5:
    """Paper Fig. 5: per-layer cut-off (config analyses.layer_cutoff)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig5")),
    localrule: True


rule fig6:
    """Paper Fig. 6: module subsets (config analyses.module_subsets)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig6")),
    localrule: True


rule fig7:
    """Paper Fig. 7: layer-wise re-initialisation, rewind and redraw (config analyses.reinit)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig7")),
    localrule: True


rule fig8:
    """Paper Fig. 8 (+ divergence statistics): clean vs adversarial activations (config analyses.features)."""
    input:
        config_error(lambda wc: plan.named_figure(config, "fig8")),
    localrule: True


rule tables:
    """Every table of the config."""
    input:
        [layout.table_path(t) for t in plan.tables(config)],
    localrule: True


# `snakemake preflight --configfile config/paper.yaml config/preflight.yaml` (docs/cluster.md); after all_figures,
# which it builds on.
include: "workflow/rules/preflight.smk"
