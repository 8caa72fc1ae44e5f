# advlayers: which layers make a network susceptible to adversarial attacks (block-wise retraining).
#
#   snakemake --cores 2 all_figures                                  embedded demo (MNIST-5k, CPU, ~10 min)
#   snakemake --configfile config/paper.yaml --executor slurm ...   the paper's figures
#
# Stages: prepare_data -> pretrain -> retrain (cut-off grid) -> evaluate -> table -> figure.


# The embedded demo config, unless --configfile names another: Snakemake would otherwise deep-merge the two
# (the demo's datasets would join the paper's).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"

wildcard_constraints:
    dataset="|".join(config["datasets"]),
    arch="|".join(ARCHS),
    pretraining="|".join(PRETRAININGS),
    direction="|".join(DIRECTIONS),
    cutoff="[0-6]",
    name=r"pretrain_(conventional|adversarial)|retrain_(conventional|adversarial)_(before|after)[0-6]"
    r"|layers_(conventional|adversarial)_(before|after)\d+|subset_(conventional|adversarial)_[01]{6}",


include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/analyses.smk"


# --------------------------------------------------------------------------- targets


rule all_figures:
    """Every figure of the configured datasets (the default target)."""
    input:
        [f for dataset in config["datasets"] for f in figure_files(dataset)],
        [analysis_figures(name) for name in ("layer_cutoff", "combinations", "reinit", "features")],
        # and every table (results/tables/cutoff.parquet gathers all datasets)
        table_files(),


rule fig2:
    """Paper Fig. 2: the cut-off figure of config figures.fig2 (CIFAR-10 in config/paper.yaml)."""
    input:
        named_figure("fig2"),


rule fig3:
    """Paper Fig. 3: the cut-off figure of config figures.fig3 (Imagenette in config/paper.yaml)."""
    input:
        named_figure("fig3"),


rule fig4:
    """Paper Fig. 4: the cut-off figure of config figures.fig4 (ImageNet in config/paper.yaml)."""
    input:
        named_figure("fig4"),


rule fig5:
    """Paper Fig. 5: per-layer cut-off (config analyses.layer_cutoff)."""
    input:
        analysis_figures("layer_cutoff"),


rule fig6:
    """Paper Fig. 6: all 64 module combinations (config analyses.combinations)."""
    input:
        analysis_figures("combinations"),


rule fig7:
    """Paper Fig. 7: layer-wise re-initialisation and re-randomisation (config analyses.reinit)."""
    input:
        analysis_figures("reinit"),


rule fig8:
    """Paper Fig. 8 (+ divergence statistics): clean vs adversarial activations (config analyses.features)."""
    input:
        analysis_figures("features"),


rule tables:
    """One row per checkpoint and evaluation, every configured dataset."""
    input:
        table_files(),


localrules:
    all_figures,
    fig2,
    fig3,
    fig4,
    fig5,
    fig6,
    fig7,
    fig8,
    tables,
    table_layer_cutoff,
    table_combinations,
    table_reinit,
    table_feature_divergence,
    figure_layer_cutoff,
    figure_combinations,
    figure_reinit,
    figure_features,
    figure_feature_divergence,
    table_dataset,
    table,
    figure,
