"""Beyond the paper: MMD (whole-image permutations) and detector AUROC (image bootstrap) per module of one net's
clean vs adversarial vectors (advlayers.jobs.features)."""

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.grid import layout
from advlayers.jobs import features

features.divergence(vectors=snakemake.input.vectors, setting=layout.setting_of(snakemake.wildcards),
                    options=snakemake.params.divergence, out=snakemake.output[0])
