rule figure:
    """Paper Fig. 2 layout: four retraining settings, x = cut-off, clean and robust accuracy per arch."""
    input:
        table="results/tables/cutoff_{dataset}.parquet",
        library=library("figure"),
    output:
        png=report(
            "results/figures/cutoff_{dataset}.png",
            caption="../report/cutoff.rst",
            category="Cut-off figures",
            labels={"dataset": "{dataset}", "format": "png"},
        ),
        pdf="results/figures/cutoff_{dataset}.pdf",
    params:
        title=lambda wc: f"Partial retraining on {wc.dataset}",
        recipe=lambda wc: recipe_params(wc.dataset),
        retrain_recipe=lambda wc: recipe_params(wc.dataset, retrain=True),
        attack=lambda wc: eval_params(wc.dataset),
        archs=lambda wc: dataset_config(wc.dataset)["archs"],
    log:
        "logs/figure/cutoff_{dataset}.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/figure.py"
