from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers import tables
from advlayers.io import atomic_write, file_digests, write_parquet

name, parts = snakemake.wildcards.table, snakemake.input.parts
kind = "cutoff" if name.startswith("cutoff_") else name  # cutoff_<dataset>: one dataset's rows
if kind in tables.COORDINATES:
    table = tables.figure_table(kind, parts, snakemake.params.coordinates)
elif name == "outcomes":
    table = tables.outcomes_table(parts)
elif name == "robustness_gap":
    table = tables.robustness_gap_table(parts)
else:
    table = tables.stacked_table(name, parts)
write_parquet(snakemake.output.table, table, metadata={"inputs": file_digests({str(p): p for p in parts})})
atomic_write(snakemake.output.html, tables.to_html(table, name))
log.info("wrote %d rows to %s", len(table), snakemake.output.table)
