rule figure:
    """One figure (PNG + PDF): the cut-off figure of a dataset (Fig. 2-4) or an analysis's (Fig. 5-8)."""
    input:
        parts=config_error(lambda wc: plan.figure_inputs(config, wc.figure)),
        library=library("figure"),
    output:
        png=report(
            layout.pattern("figure").replace("{ext}", "png"),
            caption="../report/figure.rst",
            category=lambda wc: layout.paper_figure(config, wc.figure),
            subcategory=lambda wc: figure_info(wc)["dataset"],
            labels={"figure": "{figure}"},
        ),
        pdf=layout.pattern("figure").replace("{ext}", "pdf"),
    params:
        info=config_error(figure_info),
    log:
        layout.log_path("figure", "{figure}"),
    benchmark:
        layout.benchmark_path("figure", "{figure}")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/figure.py"
