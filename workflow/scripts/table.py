from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.tables import cutoff_table, write_parquet_atomic

table = cutoff_table(snakemake.input.evaluations)
write_parquet_atomic(table, snakemake.output[0])
log.info("wrote %d rows to %s", len(table), snakemake.output[0])
