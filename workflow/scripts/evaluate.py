from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.grid import layout
from advlayers.jobs import evaluate

evaluate.run(data=snakemake.input.data, checkpoints=snakemake.params.checkpoints,
             eval_settings=snakemake.params.eval_settings,
             setting=layout.setting_of(snakemake.wildcards), device=snakemake.config["device"],
             config=snakemake.config, records_out=snakemake.output.records, outcomes_out=snakemake.output.outcomes,
             unit=snakemake.wildcards.unit)
