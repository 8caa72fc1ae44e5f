"""`snakemake verify`: `advlayers verify` on the working directory; its report on stdout and in the log."""

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.tools.verify import Verifier, report

# the config makes verify list the artifacts it implies that are missing; the commands repeat the run's cores
n, problems = Verifier(".", snakemake.config).run()  # noqa: F821
lines = report(n, problems, snakemake.params.configfiles, snakemake.params.cores)  # noqa: F821
for line in lines:
    log.info("%s", line)
print("\n".join(lines), flush=True)
if problems:
    raise SystemExit(f"advlayers verify: {len(problems)} problem(s) in results/ (listed above and in "
                     f"{snakemake.log[0]})")  # noqa: F821
