from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.datasets import load_prepared
from advlayers.io import file_digests, write_json, write_parquet
from advlayers.protocol import evaluate_checkpoints
from advlayers.provenance import config_digest

wc, params = snakemake.wildcards, snakemake.params
pretraining = wc.get("pretraining") or wc.net.split("_")[1]
records, outcomes = evaluate_checkpoints(
    params.checkpoints, load_prepared(snakemake.input.data), attack=params.attack, data_path=snakemake.input.data,
    device=snakemake.config["device"], config_digest=config_digest(snakemake.config),
    expect={"dataset": wc.dataset, "arch": wc.arch, "seed": int(wc.seed), "pretraining": pretraining},
)
write_parquet(snakemake.output.outcomes, outcomes)
write_json(snakemake.output.records, {"records": records, "attack": params.attack,
                                      "inputs": file_digests({"data": snakemake.input.data, **params.checkpoints})})
log.info("wrote %d records to %s", len(records), snakemake.output.records)
