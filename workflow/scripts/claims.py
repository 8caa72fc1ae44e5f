from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers import claims
from advlayers.io import atomic_write, file_digests, write_parquet

tables = {Path(p).stem: p for p in snakemake.input.tables}
result = claims.check_claims(tables)
write_parquet(snakemake.output.table, result, metadata={"inputs": file_digests(tables)})
atomic_write(snakemake.output.markdown, claims.to_markdown(result))
atomic_write(snakemake.output.html, claims.to_html(result))
for row in result.itertuples():
    log.info("%s %s %s/%s: %s", row.claim, row.verdict, row.dataset, row.arch, row.statistic)
print(claims.to_markdown(result, details=False))
