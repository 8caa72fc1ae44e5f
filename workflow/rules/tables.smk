# A table whose parts, or anything they are made from, went missing (e.g. the outputs of a failed evaluation,
# which Snakemake deletes) reruns with them instead of keeping its old numbers: its rebuild marker is rewritten
# while the DAG is built (advlayers.grid.rebuild explains how).


rule table:
    """One result table (docs/protocol.md "Tables"): gathered from the evaluations, or stacked from the per-net parts."""
    input:
        parts=config_error(lambda wc: plan.table_inputs(config, wc.table)),
        # what the parts are made from: only their absence matters (it reruns the table and the missing jobs)
        upstream=ancient(config_error(lambda wc: rebuild.table_upstream(config, wc.table))),
        rebuild=lambda wc: rebuild.table_rebuild_marker(config, wc.table),
        library=library("table"),
    output:
        table=layout.pattern("table"),
        # the report shows the table inline (the parquet file has every column)
        html=report(
            layout.pattern("table_html"), caption="../report/table.rst", category="Tables", labels={"table": "{table}"}
        ),
    wildcard_constraints:
        table=layout.table_names_pattern(config["datasets"]),
    params:
        coordinates=lambda wc: (
            plan.table_coordinates(config, wc.table) if layout.table_kind(wc.table) in plan.COORDINATE_TABLES else []
        ),
    log:
        layout.log_path("table", "{table}"),
    benchmark:
        layout.benchmark_path("table", "{table}")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/table.py"


rule table_rebuild_marker:
    """A table's rebuild marker, empty (a run that must rebuild the table rewrites it while building the DAG)."""
    output:
        layout.pattern("rebuild_marker"),
    wildcard_constraints:
        table=layout.table_names_pattern(config["datasets"]),
    log:
        layout.log_path("table_rebuild_marker", "{table}"),
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    shell:
        "touch {output} 2> {log}"
