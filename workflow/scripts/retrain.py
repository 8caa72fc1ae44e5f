from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.grid import layout
from advlayers.jobs import retrain

retrain.run(data=snakemake.input.data, pretrained=snakemake.input.pretrained,
            setting=layout.setting_of(snakemake.wildcards), group=snakemake.wildcards.group,
            cells=snakemake.params.cells, recipe=snakemake.params.recipe, width=snakemake.params.width,
            device=snakemake.config["device"], out_dir=snakemake.output[0])
