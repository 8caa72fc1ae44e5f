from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.checkpoints import load_checkpoint
from advlayers.datasets import load_prepared
from advlayers.io import file_digests, write_parquet
from advlayers.protocol import reinit_rows
from advlayers.grid import REDRAW_SEED_OFFSET

wc, params = snakemake.wildcards, snakemake.params
device = snakemake.config["device"]
expect = {"dataset": wc.dataset, "arch": wc.arch, "seed": int(wc.seed), "pretraining": wc.pretraining}
model, payload = load_checkpoint(snakemake.input.pretrained, device=device, expect={**expect, "cell": "pretrained"})
initial, _ = load_checkpoint(snakemake.input.initial, device=device, expect={**expect, "cell": "init"})
# Redraws come from a stream other than the pretraining seed's (which would be a rewind).
rows = reinit_rows(model, initial.state_dict(), load_prepared(snakemake.input.data), attack=params.attack,
                   bn_policies=params.bn_policies, redraw_seed=REDRAW_SEED_OFFSET + int(wc.seed), device=device,
                   dataset=wc.dataset, arch=wc.arch, width=payload.get("width", 1.0), seed=int(wc.seed),
                   pretraining=wc.pretraining)
write_parquet(snakemake.output[0], rows, metadata={"inputs": file_digests(
    {"data": snakemake.input.data, "pretrained": snakemake.input.pretrained, "initial": snakemake.input.initial})})
