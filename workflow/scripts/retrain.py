from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.checkpoints import load_checkpoint, save_checkpoint
from advlayers.datasets import load_prepared
from advlayers.analyses import layer_cutoff_units, subset_from_id, subset_id
from advlayers.models import module_names_for_cutoff
from advlayers.training import get_recipe, retrain

wc, params = snakemake.wildcards, snakemake.params
granularity = params.get("granularity", "modules")
recipe = get_recipe(params.recipe["name"], **params.recipe["overrides"])
dataset = load_prepared(snakemake.input.data)
model, _ = load_checkpoint(snakemake.input.pretrained, arch=wc.arch, dataset=wc.dataset)
# What is re-initialised and retrained: modules before/after a cut-off (Fig. 2), the first k layers (Fig. 5),
# or any subset of modules given as a bitmask m0..m5 (Fig. 6).
if granularity == "modules":
    direction, cutoff = wc.direction, int(wc.cutoff)
    units = module_names_for_cutoff(cutoff, direction)
    retrained = units
elif granularity == "layers":
    direction, cutoff = wc.direction, int(wc.cutoff)
    units = layer_cutoff_units(model, cutoff, direction)
    retrained = sorted({u.split(".")[0] for u in units})
else:
    direction, cutoff = "subset", None
    retrained = list(subset_from_id(wc.mask))
    units = retrained
    assert subset_id(retrained) == wc.mask
log.info("%s retraining of %s (%s, direction=%s, cut-off=%s): %s; recipe %s", params.mode, snakemake.input.pretrained,
         granularity, direction, cutoff, units, recipe.as_dict())
result = retrain(model, dataset, recipe, units=units, mode=params.mode, seed=params.seed,
                 device=snakemake.config["device"], state_path=params.state)
epochs = recipe.epochs if units else 0
save_checkpoint(snakemake.output[0], result.model, dataset=wc.dataset, seed=params.seed, epoch=epochs,
                recipe=recipe.as_dict(), pretraining=wc.pretraining, retraining=params.mode,
                direction=direction, cutoff=cutoff, retrained_modules=retrained, retrained_units=units,
                granularity=granularity, epochs=epochs,
                history=result.history, pretrained=str(snakemake.input.pretrained))
Path(params.state).unlink(missing_ok=True)
log.info("wrote %s", snakemake.output[0])
