from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.core.datasets import prepare_dataset, prepare_folder

name, dcfg = snakemake.wildcards.dataset, snakemake.params.dataset_config
if dcfg.get("kind") == "folder":
    summary = prepare_folder(name, dcfg["root"], snakemake.output[0], image_size=dcfg.get("image_size") or 224,
                             mean=dcfg.get("mean"), std=dcfg.get("std"))
else:
    summary = prepare_dataset(name, snakemake.params.root, snakemake.output[0])
log.info("prepared %s", summary)
