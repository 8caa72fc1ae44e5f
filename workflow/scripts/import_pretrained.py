import sys

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.jobs import import_pretrained

wc, params = snakemake.wildcards, snakemake.params
sys.exit(import_pretrained.run(data=snakemake.input.data, dataset=wc.dataset, arch=wc.arch, pretraining=wc.pretraining,
                               source=params.source, seed=int(wc.seed), width=params.width,
                               device=snakemake.config["device"], out=snakemake.output.model,
                               initial=snakemake.output.initial))
