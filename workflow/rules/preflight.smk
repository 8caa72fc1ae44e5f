# `snakemake preflight --configfile config/paper.yaml config/preflight.yaml`: the paper's whole DAG at toy size
# (config/preflight.yaml), then a checklist of what a cluster run needs (docs/cluster.md, "Step 2: preflight";
# advlayers.preflight). Included after the `all_figures` target, whose inputs it takes; other targets never
# need its outputs.


rule preflight:
    """Every figure, table and the claims check, then results/preflight.md (device and precision of every
    checkpoint, DDP ranks agreeing, every rule's outputs, training throughput) and results/throughput.yaml
    (for `advlayers cost --throughput`); prints the checklist."""
    input:
        rules.all_figures.input,
        library=library("preflight"),
    output:
        markdown=layout.path("preflight"),
        throughput=layout.path("throughput"),
    log:
        layout.log_path("preflight", "all"),
    benchmark:
        layout.benchmark_path("preflight", "all")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/preflight.py"
