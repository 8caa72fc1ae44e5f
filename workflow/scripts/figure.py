from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.io import read_table
from advlayers.report.figures import FIGURES, save_figure

# info (workflow/rules/figures.smk): kind, dataset, arch(s), width, attack, recipe / analysis, ... of the config
# that ran. parts: the figure's table, or (features_<method>) the embedding of every pretrained net.
info, out = dict(snakemake.params.info), snakemake.output
data = pd.concat([read_table(p) for p in snakemake.input.parts], ignore_index=True)  # digests checked
log.info("figure %s (%s): %d rows from %d file(s)", snakemake.wildcards.figure, info["kind"], len(data),
         len(snakemake.input.parts))
fig = FIGURES[info["kind"]](data, info)
save_figure(fig, out.png, out.pdf)
log.info("wrote %s and %s", out.png, out.pdf)
