from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.checkpoints import load_checkpoint
from advlayers.datasets import load_prepared
from advlayers.training import retrain_cell

wc, params = snakemake.wildcards, snakemake.params
device = snakemake.config["device"]
dataset = load_prepared(snakemake.input.data)
pretrained, payload = load_checkpoint(snakemake.input.pretrained, arch=wc.arch, dataset=wc.dataset, device=device,
                                      expect={"seed": int(wc.seed), "pretraining": wc.pretraining,
                                              "cell": "pretrained", "width": params.width})
out = Path(snakemake.output[0])
for cell in params.cells:
    # each cell: the pretrained net with the cell's layers redrawn and retrained; its own resume state
    retrain_cell(pretrained, dataset, cell, recipe=params.recipe, mode=params.mode, seed=int(wc.seed),
                 device=device, state_path=f"{params.state}/retrain_{wc.pretraining}_{cell}.pt",
                 out=out / f"{cell}.pt", inputs={"data": snakemake.input.data, "pretrained": snakemake.input.pretrained},
                 dataset_name=wc.dataset, pretraining=wc.pretraining)
    log.info("cell %s done", cell)
# every checkpoint of the batch is complete: the resume states are no longer needed
for cell in params.cells:
    Path(f"{params.state}/retrain_{wc.pretraining}_{cell}.pt").unlink(missing_ok=True)
log.info("wrote %d checkpoints to %s", len(params.cells), out)
