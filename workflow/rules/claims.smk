rule claims:
    """The paper's claims C1-C8, each tested from this run's tables with a 95% interval and a verdict
    (holds / fails / inconclusive / not run): results/tables/claims.parquet and results/claims.md."""
    input:
        tables=[layout.table_path(t) for t in plan.tables(config)],
        library=library("claims"),
    output:
        table=layout.path("claims_table"),
        markdown=layout.path("claims"),
        html=report(
            layout.path("claims_html"), caption="../report/claims.rst", category="Claims", labels={"page": "claims"}
        ),
    params:
        analyses=lambda wc: sorted((config.get("analyses") or {})),
        rules=conf.claims_rules(config),
    log:
        layout.log_path("claims", "all"),
    benchmark:
        layout.benchmark_path("claims", "all")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/claims.py"


rule cutoff_claims:
    """The claims of one dataset's cut-off figure (C0-C4), from that figure's table and nets only: part of the
    fig2/fig3/fig4 targets, so a figure is rebuilt with its verdicts and without the analyses' nets."""
    input:
        table=layout.table_path(layout.cutoff_table("{dataset}")),
        outcomes=lambda wc: plan.outcome_files(config, wc.dataset, cutoff_only=True),
        library=library("claims"),
    output:
        markdown=layout.pattern("cutoff_claims"),
    params:
        rules=conf.claims_rules(config),
    log:
        layout.log_path("claims", "cutoff_{dataset}"),
    benchmark:
        layout.benchmark_path("claims", "cutoff_{dataset}")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/claims.py"
