from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.plots import cutoff_figure, save_figure

table = pd.read_parquet(snakemake.input.table)
fig = cutoff_figure(table, title=snakemake.params.title, archs=snakemake.params.archs)
save_figure(fig, snakemake.output.png, snakemake.output.pdf)
log.info("wrote %s and %s", snakemake.output.png, snakemake.output.pdf)
