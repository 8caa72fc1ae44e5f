"""Fig. 8: joint 2-D embedding of one net's clean and adversarial vectors, per module (advlayers.jobs.features)."""

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.grid import layout
from advlayers.jobs import features

features.embed(vectors=snakemake.input.vectors, setting=layout.setting_of(snakemake.wildcards),
               method=snakemake.wildcards.method, embedding=snakemake.params.embedding, out=snakemake.output[0])
