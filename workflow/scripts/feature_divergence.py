from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.features import feature_divergence, load_activations
from advlayers.tables import write_parquet_atomic

wc, params = snakemake.wildcards, snakemake.params
result = load_activations(snakemake.input.vectors)
rows = []
for module, vectors in result["modules"].items():
    stats = feature_divergence(vectors["clean"], vectors["adv"], result["image"], seed=params.seed,
                               **params.divergence)
    log.info("%s: MMD^2 %.4g (p %.3g), detector AUROC %.3f", module, stats["mmd2"], stats["mmd_p_value"],
             stats["detector_auroc"])
    rows.append({"dataset": wc.dataset, "arch": wc.arch, "net": wc.pretraining, "module": module,
                 "n_vectors": len(vectors["clean"]), "channels": vectors["clean"].shape[1], **stats})
write_parquet_atomic(pd.DataFrame(rows), snakemake.output[0])
