# A table whose parts, or anything they are made from, went missing (e.g. the outputs of a failed evaluation,
# which Snakemake deletes) reruns with them instead of keeping its old numbers: its rebuild marker is rewritten
# while the DAG is built (advlayers.verify.table_rebuild_marker explains how).

from advlayers import verify as consistency  # noqa: E402


rule table:
    """One result table (docs/protocol.md "Tables"): gathered from the evaluations, or stacked from the per-net parts."""
    input:
        parts=config_error(lambda wc: consistency.table_parts(config, wc.table)),
        # what the parts are made from: only their absence matters (it reruns the table and the missing jobs)
        upstream=ancient(config_error(lambda wc: consistency.table_upstream(config, wc.table))),
        rebuild=lambda wc: consistency.table_rebuild_marker(config, wc.table),
        library=library("table"),
    output:
        table="results/tables/{table}.parquet",
        # the report shows the table inline (the parquet file has every column)
        html=report("results/tables/{table}.html", caption="../report/table.rst", category="Tables",
                    labels={"table": "{table}"}),
    wildcard_constraints:
        table=grid.table_pattern(config),
    params:
        coordinates=lambda wc: grid.table_coordinates(config, wc.table)
        if grid.table_kind(wc.table) in ("cutoff", "layer_cutoff", "module_subsets") else [],
    log:
        "logs/table/{table}.log",
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/table.py"


rule table_rebuild_marker:
    """A table's rebuild marker, empty (a run that must rebuild the table rewrites it while building the DAG)."""
    output:
        "results/.rebuild/{table}.txt",
    wildcard_constraints:
        table=grid.table_pattern(config),
    log:
        "logs/table_rebuild_marker/{table}.log",
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    shell:
        "touch {output} 2> {log}"
