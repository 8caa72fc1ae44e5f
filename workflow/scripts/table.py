from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.report import tables

table = tables.run(table=snakemake.wildcards.table, parts=snakemake.input.parts,
                   coordinates=snakemake.params.coordinates, out=snakemake.output.table, html=snakemake.output.html)
log.info("wrote %d rows to %s", len(table), snakemake.output.table)
