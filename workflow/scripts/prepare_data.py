from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.core.datasets import prepare_dataset, prepare_folder

name, dcfg = snakemake.wildcards.dataset, snakemake.params.dataset_config
# decode: cache builds the decoded-image cache beside the manifest (the params name it only then)
decode = {"decode": dcfg.get("decode", "pil"), "cache_size": dcfg.get("cache_size")}
if dcfg.get("kind") == "folder":
    summary = prepare_folder(name, dcfg["root"], snakemake.output[0], image_size=dcfg.get("image_size") or 224,
                             mean=dcfg.get("mean"), std=dcfg.get("std"), **decode)
else:
    summary = prepare_dataset(name, snakemake.params.root, snakemake.output[0], **decode)
log.info("prepared %s", summary)
