rule claims:
    """The paper's claims C1-C8, each tested from this run's tables with a 95% interval and a verdict
    (holds / fails / inconclusive / not run): results/tables/claims.parquet and results/claims.md."""
    input:
        tables=[grid.table_path(t) for t in grid.tables(config)],
        library=library("claims"),
    output:
        table="results/tables/claims.parquet",
        markdown="results/claims.md",
        html=report("results/claims.html", caption="../report/claims.rst", category="Claims"),
    params:
        analyses=lambda wc: sorted((config.get("analyses") or {})),
    log:
        "logs/claims.log",
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/claims.py"
