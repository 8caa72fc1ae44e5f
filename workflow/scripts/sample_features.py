"""Fig. 8: activation vectors after m1..m4, clean and PGD, of one pretrained net (advlayers.jobs.features)."""

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.grid import layout
from advlayers.jobs import features

features.sample(data=snakemake.input.data, pretrained=snakemake.input.pretrained,
                setting=layout.setting_of(snakemake.wildcards), features=snakemake.params.features,
                eval_settings=snakemake.params.eval_settings, device=snakemake.config["device"],
                out=snakemake.output[0])
