import os
import subprocess
import sys
from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.checkpoints import save_checkpoint
from advlayers.datasets import load_prepared
from advlayers.models import build_model
from advlayers.training import get_recipe, pretrain

wc, params = snakemake.wildcards, snakemake.params
recipe = get_recipe(params.recipe["name"], **params.recipe["overrides"])
log.info("recipe %s", recipe.as_dict())
dataset = load_prepared(snakemake.input.data)
# Epoch-0 weights (what `pretrain` starts from: build_model with the same seed), for re-initialisation (Fig. 7).
initial = build_model(wc.arch, dataset.info.num_classes, dataset.info.image_size, seed=params.seed)
save_checkpoint(snakemake.output.initial, initial, dataset=wc.dataset, seed=params.seed, epoch=0,
                recipe=recipe.as_dict(), pretraining=wc.pretraining, retraining="none", direction="none",
                cutoff=None, retrained_modules=[], epochs=0)
gpus = int(snakemake.resources.get("gpu", 0))
if gpus > 1:
    # DDP with SyncBatchNorm, one process per GPU of this job; rank 0 writes the same checkpoint.
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
        "-m", "advlayers.distributed", "--data", snakemake.input.data, "--dataset", wc.dataset, "--arch", wc.arch,
        "--mode", wc.pretraining, "--recipe", params.recipe["name"], "--seed", str(params.seed),
        "--device", snakemake.config["device"], "--state", params.state, "--out", snakemake.output.model,
        "--logfile", snakemake.log[0], "--threads", str(snakemake.threads),
        *[f"--override={k}={v!r}" for k, v in params.recipe["overrides"].items()],
    ]
    log.info("launching %s", " ".join(command))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(command, check=True, env=env, stdout=sys.stderr, stderr=sys.stderr)
else:
    result = pretrain(wc.arch, dataset, recipe, mode=wc.pretraining, seed=params.seed,
                      device=snakemake.config["device"], state_path=params.state)
    save_checkpoint(snakemake.output.model, result.model, dataset=wc.dataset, seed=params.seed, epoch=recipe.epochs,
                    recipe=recipe.as_dict(), pretraining=wc.pretraining, retraining="none", direction="none",
                    cutoff=None, retrained_modules=[], epochs=recipe.epochs, history=result.history)
Path(params.state).unlink(missing_ok=True)  # the checkpoint is complete: the resume state is no longer needed
log.info("wrote %s", snakemake.output.model)
