import sys

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.jobs import pretrain

wc, params = snakemake.wildcards, snakemake.params
sys.exit(pretrain.run(gpus=int(snakemake.resources.get("gpu", 0)), logfile=snakemake.log[0], data=snakemake.input.data,
                      dataset=wc.dataset, arch=wc.arch, pretraining=wc.pretraining, recipe=params.recipe["name"],
                      overrides=params.recipe["overrides"], width=params.width, seed=int(wc.seed),
                      device=snakemake.config["device"], state=params.state, out=snakemake.output.model,
                      initial=snakemake.output.initial, threads=snakemake.threads,
                      epoch_eval=params.recipe.get("epoch_eval")))
