from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.attacks import AttackSpec
from advlayers.checkpoints import load_checkpoint
from advlayers.datasets import load_prepared
from advlayers.features import sample_activations, save_activations

wc, params = snakemake.wildcards, snakemake.params
device = snakemake.config["device"]
cfg, attack = params.features, params.attack
spec = AttackSpec(attack["eps"], attack["step_size"], attack["steps"], random_start=True, restarts=attack["restarts"])
dataset = load_prepared(snakemake.input.data)
model, _ = load_checkpoint(snakemake.input.pretrained, arch=wc.arch, dataset=wc.dataset, device=device)
result = sample_activations(model, dataset.test, modules=tuple(cfg["modules"]), n_images=cfg["n_images"],
                            vectors_per_image=cfg["vectors_per_image"], attack=spec, seed=params.seed,
                            batch_size=cfg.get("batch_size", 100), device=device)
result["meta"].update(dataset=wc.dataset, arch=wc.arch, pretraining=wc.pretraining)
save_activations(snakemake.output[0], result)
for module, part in result["modules"].items():
    log.info("%s: %s vectors of %d channels", module, part["clean"].shape[0], part["clean"].shape[1])
