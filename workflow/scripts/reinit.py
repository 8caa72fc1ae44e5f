from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.grid import layout
from advlayers.jobs import reinit

reinit.run(data=snakemake.input.data, pretrained=snakemake.input.pretrained, initial=snakemake.input.initial,
           setting=layout.setting_of(snakemake.wildcards), eval_settings=snakemake.params.eval_settings,
           bn_policies=snakemake.params.bn_policies, device=snakemake.config["device"], out=snakemake.output[0])
