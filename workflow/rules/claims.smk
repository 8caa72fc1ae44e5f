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


rule cutoff_claims:
    """The claims of one dataset's cut-off figure (C0-C4), from that figure's table and nets only: part of the
    fig2/fig3/fig4 targets, so a figure is rebuilt with its verdicts and without the analyses' nets."""
    input:
        table=grid.table_path("cutoff_{dataset}"),
        outcomes=lambda wc: grid.outcome_files(config, wc.dataset, cutoff_only=True),
        library=library("claims"),
    output:
        markdown="results/claims/cutoff_{dataset}.md",
    log:
        "logs/claims/cutoff_{dataset}.log",
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/claims.py"
