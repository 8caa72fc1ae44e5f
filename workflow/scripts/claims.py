from pathlib import Path

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers import claims, tables
from advlayers.io import atomic_write, file_digests, write_parquet

if snakemake.rule == "cutoff_claims":  # one cut-off figure's claims, from its table and outcomes
    result = claims.check_cutoff_claims(snakemake.input.table, tables.outcomes_table(snakemake.input.outcomes))
else:
    inputs = {Path(p).stem: p for p in snakemake.input.tables}
    result = claims.check_claims(inputs)
    write_parquet(snakemake.output.table, result, metadata={"inputs": file_digests(inputs)})
    atomic_write(snakemake.output.html, claims.to_html(result))
atomic_write(snakemake.output.markdown, claims.to_markdown(result))
for row in result.itertuples():
    log.info("%s %s %s/%s: %s", row.claim, row.verdict, row.dataset, row.arch, row.statistic)
print(claims.to_markdown(result, details=False))
