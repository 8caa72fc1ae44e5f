"""Fig. 8: joint 2-D embedding of one net's clean and adversarial vectors, per module (advlayers.embedding)."""

import time

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.embedding import embed_clean_adv
from advlayers.features import load_activations
from advlayers.io import file_digests, write_parquet

wc, params = snakemake.wildcards, snakemake.params  # noqa: F821
EMBEDDING_SEED = 0
result = load_activations(snakemake.input.vectors)  # noqa: F821
max_points = params.embedding.get("max_points", 20_000)
parts = []
for module, vectors in result["modules"].items():
    t0 = time.perf_counter()
    embedded = embed_clean_adv(vectors["clean"], vectors["adv"], wc.method, image_ids=vectors["image"],
                               seed=EMBEDDING_SEED, max_points=max_points)
    log.info("%s %s: %d points embedded in %.1fs", wc.method, module, len(embedded), time.perf_counter() - t0)
    parts.append(embedded.assign(dataset=wc.dataset, arch=wc.arch, seed=int(wc.seed), pretraining=wc.pretraining,
                                 module=module, method=wc.method))
columns = ["dataset", "arch", "seed", "pretraining", "module", "method", "x", "y", "condition", "row", "image"]
write_parquet(snakemake.output[0], pd.concat(parts, ignore_index=True)[columns],  # noqa: F821
              metadata={"inputs": file_digests({"vectors": snakemake.input.vectors})})  # noqa: F821
