from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.report import claims

if snakemake.rule == "cutoff_claims":  # one cut-off figure's claims, from its table and outcomes
    result = claims.run(tables=[snakemake.input.table], outcomes=snakemake.input.outcomes,
                        markdown=snakemake.output.markdown, rules=snakemake.params.rules)
else:
    result = claims.run(tables=snakemake.input.tables, markdown=snakemake.output.markdown,
                        table_out=snakemake.output.table, html=snakemake.output.html, rules=snakemake.params.rules)
print(claims.to_markdown(result, details=False))
