# `snakemake verify`: re-hash every artifact under results/ and check it against the files it was made from
# (`advlayers verify`, src/advlayers/tools/verify.py). Runs every time it is asked for (it has no output); fails
# when there are problems, printing each with the command that rebuilds it and everything made from it.


rule verify:
    """Check every artifact under results/ (corrupt, swapped, stale or missing) and print how to rebuild it."""
    params:
        # the config files of this invocation (relative to the working directory when inside it), repeated in
        # the printed rebuild commands
        configfiles=[
            str(c) if os.path.relpath(c).startswith("..") else os.path.relpath(c)
            for c in workflow.overwrite_configfiles
        ],
        # a cluster profile runs without --cores (`workflow.cores` would raise): the printed commands then say 'all'
        cores=workflow.resource_settings.cores or "all",
    log:
        layout.log_path("verify", "all"),
    benchmark:
        layout.benchmark_path("verify", "all")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/verify.py"
