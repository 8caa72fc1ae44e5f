from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.analyses import reinit_grid
from advlayers.attacks import AttackSpec
from advlayers.checkpoints import load_checkpoint
from advlayers.datasets import load_prepared
from advlayers.evaluation import evaluate
from advlayers.tables import write_parquet_atomic
from advlayers.training import REINIT_SEED_OFFSET

wc, params = snakemake.wildcards, snakemake.params
device = snakemake.config["device"]
attack = params.attack
spec = AttackSpec(attack["eps"], attack["step_size"], attack["steps"], random_start=True, restarts=attack["restarts"])
dataset = load_prepared(snakemake.input.data)
model, payload = load_checkpoint(snakemake.input.pretrained, arch=wc.arch, dataset=wc.dataset, device=device)
initial, _ = load_checkpoint(snakemake.input.initial, arch=wc.arch, dataset=wc.dataset, device=device)
rows = []
# Re-randomisation draws from a stream other than the pretraining seed's (which would be re-initialisation).
for index, name, how, candidate in reinit_grid(model, initial.state_dict(), seed=REINIT_SEED_OFFSET + params.seed,
                                               bn_policy=params.bn_policy):
    record = evaluate(candidate, dataset.test, spec, n=attack["n"], seed=params.seed, batch_size=attack["batch_size"],
                      device=device, progress=False)
    rows.append({"dataset": wc.dataset, "arch": wc.arch, "pretrain": wc.pretraining, "layer_index": index,
                 "layer_name": name, "how": how, "bn_policy": params.bn_policy, **record})
    log.info("%-22s %-11s clean %.3f robust %.3f", name, how, record["clean_acc"], record["robust_acc"])
write_parquet_atomic(pd.DataFrame(rows), snakemake.output[0])
