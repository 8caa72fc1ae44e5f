rule table_dataset:
    """One row per checkpoint of one dataset (what that dataset's figure reads)."""
    input:
        evaluations=lambda wc: evaluations(wc.dataset),
        library=library("table"),
    output:
        "results/tables/cutoff_{dataset}.parquet",
    log:
        "logs/table/cutoff_{dataset}.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/table.py"


rule table:
    """Every configured dataset's rows in one table."""
    input:
        evaluations=[e for dataset in config["datasets"] for e in evaluations(dataset)],
        library=library("table"),
    output:
        report("results/tables/cutoff.parquet", caption="../report/table.rst", category="Tables"),
    log:
        "logs/table/cutoff.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/table.py"
