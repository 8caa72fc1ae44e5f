import json
import os
import tempfile
from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.attacks import AttackSpec
from advlayers.checkpoints import load_checkpoint
from advlayers.datasets import load_prepared
from advlayers.evaluation import evaluate

wc, params = snakemake.wildcards, snakemake.params
attack = params.attack
device = snakemake.config["device"]
model, payload = load_checkpoint(snakemake.input.checkpoint, arch=wc.arch, dataset=wc.dataset, device=device)
meta = payload["meta"]
dataset = load_prepared(snakemake.input.data)
spec = AttackSpec(attack["eps"], attack["step_size"], attack["steps"], random_start=True, restarts=attack["restarts"])
record = evaluate(
    model, dataset.test, spec, n=attack["n"], seed=params.seed, batch_size=attack["batch_size"], count="any",
    device=device,
    dataset=wc.dataset, arch=wc.arch, pretraining=meta["pretraining"], retraining=meta["retraining"],
    direction=meta["direction"], cutoff=meta["cutoff"], retrained_modules=meta["retrained_modules"],
    epochs=meta["epochs"], checkpoint=str(snakemake.input.checkpoint),
)
record = {"seed": payload["seed"], **record}  # the training seed (`seed=` of evaluate is the subset/attack seed)
log.info("clean %.4f robust %.4f (%d images, %.1fs)", record["clean_acc"], record["robust_acc"], record["n_eval"],
         record["seconds"])
out = Path(snakemake.output[0])
out.parent.mkdir(parents=True, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
with os.fdopen(fd, "w") as f:
    json.dump(record, f, indent=1)
os.replace(tmp, out)
