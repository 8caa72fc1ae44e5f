from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.io import atomic_write
from advlayers.tools.preflight import checklist, throughput_yaml

markdown, throughput, ok = checklist(snakemake.config)
atomic_write(snakemake.output.throughput, throughput_yaml(throughput))
atomic_write(snakemake.output.markdown, markdown + "\n")
log.info("preflight %s: %s, %s", "ok" if ok else "NOT OK", snakemake.output.markdown, snakemake.output.throughput)
print(markdown, flush=True)
