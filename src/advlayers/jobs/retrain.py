"""The retraining job (rule `retrain`): the cells of one retraining group of a pretrained net, each redrawn and
retrained in the opposite mode with the rest frozen, one checkpoint per cell.

Each cell has its own resume state (`grid.layout.retrain_state`), kept until every cell of the group is done: a
group job that fails later resumes its finished cells instantly.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from ..core.checkpoints import load_checkpoint, save_checkpoint
from ..core.datasets import load_prepared
from ..core.epoch_eval import epoch_evaluator
from ..core.recipes import get_recipe
from ..core.training import cell_units, retrain
from ..grid import layout
from ..grid.vocabulary import PRETRAINED, Setting, cell_modules, describe_cell
from ..io import file_digests
from ..provenance import environment

log = logging.getLogger(__name__)


def retrain_cell(pretrained, data, cell: str, *, setting: Setting, recipe: dict, device, state_path, out,
                 inputs: dict, epoch_eval=None) -> dict:
    """Redraw and retrain `cell`'s layers of a copy of `pretrained` in `setting`'s retraining mode, the rest
    frozen; save the checkpoint to `out` (its payload, without weights, is returned). `recipe` = {"name",
    "overrides"} (`grid.conf.recipe_params`); `epoch_eval`: the held-out evaluation after each epoch
    (`core.epoch_eval.epoch_evaluator`), or None."""
    model = copy.deepcopy(pretrained)
    units = cell_units(model, cell)
    resolved = get_recipe(recipe["name"], **recipe["overrides"])
    log.info("%s retraining of cell %s (%s): %s; recipe %s", setting.retraining, cell,
             describe_cell(model.spec.arch, cell), units, resolved.as_dict())
    result = retrain(model, data, resolved, units=units, mode=setting.retraining, seed=setting.seed, device=device,
                     state_path=state_path, progress=True, epoch_eval=epoch_eval)
    return save_checkpoint(
        out, result.model, dataset=setting.dataset, seed=setting.seed, epoch=resolved.epochs,
        recipe=resolved.as_dict(), inputs=file_digests(inputs),
        provenance=environment(device, precision=result.precision), pretraining=setting.pretraining,
        retraining=setting.retraining, cell=cell, retrained_modules=cell_modules(model.spec.arch, cell), units=units,
        epochs=resolved.epochs, history=result.history, precision=result.precision,
        channels_last=result.channels_last, start_digest=result.start_digest, recipe_overrides=recipe["overrides"],
        eval_each_epoch=epoch_eval.settings if epoch_eval else None)


def run(*, data: str, pretrained: str, setting: Setting, group: str, cells: list[str], recipe: dict, width: float,
        device: str, out_dir: str) -> None:
    """The job: every cell of `group` into `out_dir` (the group's folder), then the resume states removed."""
    dataset = load_prepared(data)
    evaluator = epoch_evaluator(dataset, setting.dataset, recipe.get("epoch_eval"))
    net, _ = load_checkpoint(pretrained, device=device,
                             expect={**setting.identity(), "cell": PRETRAINED, "width": width}, sources=True)
    for cell in cells:
        retrain_cell(net, dataset, cell, setting=setting, recipe=recipe, device=device,
                     state_path=layout.retrain_state(setting, cell), out=Path(out_dir) / f"{cell}.pt",
                     inputs={"data": data, "pretrained": pretrained}, epoch_eval=evaluator)
        log.info("cell %s done", cell)
    for cell in cells:  # every checkpoint of the group is complete: the resume states are no longer needed
        Path(layout.retrain_state(setting, cell)).unlink(missing_ok=True)
    log.info("wrote %d checkpoints to %s (group %s)", len(cells), out_dir, group)
