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
    name=r"pretrain_(conventional|adversarial)|retrain_(conventional|adversarial)_(before|after)[0-6]",


include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


# --------------------------------------------------------------------------- targets


rule all_figures:
    """Every figure of the configured datasets (the default target)."""
    input:
        [f for dataset in config["datasets"] for f in figure_files(dataset)],


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


rule tables:
    """One row per checkpoint and evaluation, every configured dataset."""
    input:
        "results/tables/cutoff.parquet",


localrules:
    all_figures,
    fig2,
    fig3,
    fig4,
    tables,
    table_dataset,
    table,
    figure,
