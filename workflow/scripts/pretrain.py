from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.checkpoints import save_checkpoint
from advlayers.datasets import load_prepared
from advlayers.training import get_recipe, pretrain

wc, params = snakemake.wildcards, snakemake.params
recipe = get_recipe(params.recipe["name"], **params.recipe["overrides"])
log.info("recipe %s", recipe.as_dict())
dataset = load_prepared(snakemake.input.data)
result = pretrain(wc.arch, dataset, recipe, mode=wc.pretraining, seed=params.seed,
                  device=snakemake.config["device"], state_path=params.state)
save_checkpoint(snakemake.output[0], result.model, dataset=wc.dataset, seed=params.seed, epoch=recipe.epochs,
                recipe=recipe.as_dict(), pretraining=wc.pretraining, retraining="none", direction="none",
                cutoff=None, retrained_modules=[], epochs=recipe.epochs, history=result.history)
Path(params.state).unlink(missing_ok=True)  # the checkpoint is complete: the resume state is no longer needed
log.info("wrote %s", snakemake.output[0])
