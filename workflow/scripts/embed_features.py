import time

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

import pandas as pd

from advlayers.features import embed_clean_adv, load_activations
from advlayers.tables import write_parquet_atomic

wc, params = snakemake.wildcards, snakemake.params
result = load_activations(snakemake.input.vectors)
parts = []
for module, vectors in result["modules"].items():
    t0 = time.perf_counter()
    df = embed_clean_adv(vectors["clean"], vectors["adv"], wc.method, seed=params.seed,
                         max_points=params.embedding.get("max_points", 20_000))
    log.info("%s %s: %d points embedded in %.1fs", wc.method, module, len(df), time.perf_counter() - t0)
    parts.append(df.assign(net=wc.pretraining, module=module, method=wc.method))
write_parquet_atomic(pd.concat(parts, ignore_index=True), snakemake.output[0])
