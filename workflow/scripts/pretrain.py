import os
import subprocess
import sys

from _common import setup

log = setup(snakemake)  # noqa: F821 (injected by Snakemake)

from advlayers.launch import pretrain_files

wc, params = snakemake.wildcards, snakemake.params
files = dict(data=snakemake.input.data, dataset=wc.dataset, arch=wc.arch, mode=wc.pretraining,
             recipe=params.recipe["name"], overrides=params.recipe["overrides"], width=params.width, seed=int(wc.seed),
             device=snakemake.config["device"], state=params.state, out=snakemake.output.model,
             initial=snakemake.output.initial, threads=snakemake.threads)
gpus = int(snakemake.resources.get("gpu", 0))
if gpus > 1:
    # DDP with SyncBatchNorm, one process per GPU of this job; rank 0 writes the checkpoints.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "advlayers.cli", "pretrain", "--logfile", snakemake.log[0],
               *[f"--{k}={v}" for k, v in files.items() if k != "overrides"],
               *[f"--override={k}={v!r}" for k, v in params.recipe["overrides"].items()]]
    log.info("launching %s", " ".join(command))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    sys.exit(subprocess.run(command, env=env, stdout=sys.stderr, stderr=sys.stderr).returncode)
# one process: a preempted run exits with 128 + signal (the state is saved; a rerun resumes)
sys.exit(pretrain_files(**files))
