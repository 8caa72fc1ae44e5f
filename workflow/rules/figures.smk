rule figure:
    """One figure (PNG + PDF): the cut-off figure of a dataset (Fig. 2-4) or an analysis's (Fig. 5-8)."""
    input:
        parts=config_error(figure_inputs),
        library=library("figure"),
    output:
        png=report("results/figures/{figure}.png", caption="../report/figure.rst",
                   category=lambda wc: grid.paper_figure(config, wc.figure),
                   subcategory=lambda wc: figure_info(wc)["dataset"], labels={"figure": "{figure}"}),
        pdf="results/figures/{figure}.pdf",
    params:
        info=config_error(figure_info),
    log:
        "logs/figure/{figure}.log",
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/figure.py"
