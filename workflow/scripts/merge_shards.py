from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.jobs import merge_shards

merge_shards.run(shards=list(snakemake.input.shards), records_out=snakemake.output.records,
                 outcomes_out=snakemake.output.outcomes)
