from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.checkpoints import load_checkpoint, save_checkpoint
from advlayers.datasets import load_prepared
from advlayers.models import module_names_for_cutoff
from advlayers.training import get_recipe, retrain

wc, params = snakemake.wildcards, snakemake.params
cutoff = int(wc.cutoff)
units = module_names_for_cutoff(cutoff, wc.direction)
recipe = get_recipe(params.recipe["name"], **params.recipe["overrides"])
log.info("%s retraining of %s before/after=%s cut-off=%d: modules %s; recipe %s", params.mode,
         snakemake.input.pretrained, wc.direction, cutoff, units, recipe.as_dict())
dataset = load_prepared(snakemake.input.data)
model, _ = load_checkpoint(snakemake.input.pretrained, arch=wc.arch, dataset=wc.dataset)
result = retrain(model, dataset, recipe, units=units, mode=params.mode, seed=params.seed,
                 device=snakemake.config["device"], state_path=params.state)
epochs = recipe.epochs if units else 0
save_checkpoint(snakemake.output[0], result.model, dataset=wc.dataset, seed=params.seed, epoch=epochs,
                recipe=recipe.as_dict(), pretraining=wc.pretraining, retraining=params.mode,
                direction=wc.direction, cutoff=cutoff, retrained_modules=units, epochs=epochs,
                history=result.history, pretrained=str(snakemake.input.pretrained))
Path(params.state).unlink(missing_ok=True)
log.info("wrote %s", snakemake.output[0])
