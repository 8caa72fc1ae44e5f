"""Fig. 8: activation vectors after m1..m4, clean and PGD, of one pretrained net (advlayers.features)."""

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.attacks import AttackSpec
from advlayers.checkpoints import load_checkpoint
from advlayers.datasets import load_prepared
from advlayers.features import save_activations, sample_activations
from advlayers.io import file_digests

wc, params = snakemake.wildcards, snakemake.params  # noqa: F821
device = snakemake.config["device"]  # noqa: F821
features, attack = params.features, params.attack
if attack.get("attack", "pgd") != "pgd":
    raise ValueError(f"feature sampling attacks with PGD; the features eval config names {attack['attack']!r}")
spec = AttackSpec(attack["eps"], attack["step_size"], attack["steps"], random_start=True,
                  restarts=attack.get("restarts", 1))
# The evaluation subset seed (not the training seed): every net of the grid is sampled on the same images.
sampling_seed = attack.get("seed", 0)
dataset = load_prepared(snakemake.input.data)  # noqa: F821
model, payload = load_checkpoint(snakemake.input.pretrained, arch=wc.arch, dataset=wc.dataset,  # noqa: F821
                                 expect={"seed": int(wc.seed), "pretraining": wc.pretraining, "cell": "pretrained"},
                                 device=device)
result = sample_activations(model, dataset.test, modules=tuple(features["modules"]), n_images=features["n_images"],
                            vectors_per_image=features["vectors_per_image"], attack=spec, seed=sampling_seed,
                            batch_size=features.get("batch_size", 100), device=device)
# the files it was made from (their sha256, which `advlayers verify` checks)
inputs = file_digests({"data": snakemake.input.data, "pretrained": snakemake.input.pretrained})  # noqa: F821
result["meta"].update(dataset=wc.dataset, arch=wc.arch, seed=int(wc.seed), pretraining=wc.pretraining,
                      width=payload.get("width", 1.0), inputs=inputs)
save_activations(snakemake.output[0], result)  # noqa: F821
for module, part in result["modules"].items():
    log.info("%s: %d images x %d vectors of %d channels", module, result["meta"]["n_images"],
             part["vectors_per_image"], part["clean"].shape[1])
log.info("clean accuracy %.3f, adversarial accuracy %.3f on the sampled images",
         (result["pred_clean"] == result["label"]).mean(), (result["pred_adv"] == result["label"]).mean())
