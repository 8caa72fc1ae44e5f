from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.analyses import subset_id
from advlayers.tables import cutoff_table, write_parquet_atomic

kind = snakemake.params.kind
if kind in ("layer_cutoff", "combinations"):
    # Same columns as the cut-off table (one row per checkpoint); combinations add the subset bitmask.
    table = cutoff_table(snakemake.input.evaluations)
    if kind == "combinations":
        table.insert(table.columns.get_loc("retrained_modules") + 1, "subset",
                     table["retrained_modules"].map(subset_id).astype("string"))
else:  # reinit, feature_divergence: the per-net tables stacked
    table = pd.concat([pd.read_parquet(p) for p in snakemake.input.parts], ignore_index=True)
write_parquet_atomic(table, snakemake.output[0])
log.info("wrote %d rows to %s", len(table), snakemake.output[0])
