"""Beyond the paper: MMD (whole-image permutations) and detector AUROC (image bootstrap) per module
(advlayers.divergence) of one net's clean vs adversarial vectors."""

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.divergence import feature_divergence
from advlayers.features import load_activations
from advlayers.io import file_digests, write_parquet

wc, params = snakemake.wildcards, snakemake.params  # noqa: F821
result = load_activations(snakemake.input.vectors)  # noqa: F821
meta = result["meta"]
rows = []
for module, vectors in result["modules"].items():
    stats = feature_divergence(vectors["clean"], vectors["adv"], vectors["image"], **params.divergence)
    log.info("%s: MMD^2 %.4g (p %.3g, %d images), detector AUROC %.3f [%.3f, %.3f]", module, stats["mmd2"],
             stats["mmd_p_value"], stats["mmd_n_images"], stats["detector_auroc"], stats["detector_auroc_lo"],
             stats["detector_auroc_hi"])
    rows.append({"dataset": wc.dataset, "arch": wc.arch, "width": float(meta.get("width", 1.0)), "seed": int(wc.seed),
                 "pretraining": wc.pretraining, "module": module, "n_images": int(meta["n_images"]),
                 "n_vectors": len(vectors["clean"]), "channels": vectors["clean"].shape[1], **stats})
table = pd.DataFrame(rows)
columns = ["dataset", "arch", "width", "seed", "pretraining", "module", "n_images", "n_vectors", "channels", "mmd2",
           "mmd_p_value", "n_permutations", "mmd_bandwidth", "detector_auroc", "detector_auroc_lo",
           "detector_auroc_hi", "detector_auroc_boot", "detector_acc", "n_train", "n_test", "seconds"]
write_parquet(snakemake.output[0], table[columns + [c for c in table.columns if c not in columns]],  # noqa: F821
              metadata={"inputs": file_digests({"vectors": snakemake.input.vectors})})  # noqa: F821
