from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.core.datasets import prepare_dataset

summary = prepare_dataset(snakemake.wildcards.dataset, snakemake.params.root, snakemake.output[0])
log.info("prepared %s", summary)
