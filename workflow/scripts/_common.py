"""Shared set-up of the workflow scripts: log file, stderr (tqdm, warnings) into it, library path, threads."""

import logging
import os
import sys
from pathlib import Path

# The workflow runs this checkout's library (the src/ files its rules list as inputs), installed or not: its
# src/ goes first on the path (Snakemake's preamble appends it after site-packages, where an editable install
# of another checkout could win).
SRC = Path(__file__).resolve().parents[2] / "src"
if SRC.is_dir():
    sys.path[:] = [str(SRC)] + [p for p in sys.path if p != str(SRC)]
# tqdm reads its defaults at import: in a log file one progress line every 30 s is plenty.
os.environ.setdefault("TQDM_MININTERVAL", "30")


def setup(snakemake) -> logging.Logger:
    """Log to the rule's log file; torch (imported after this) uses the job's `threads`."""
    os.environ["OMP_NUM_THREADS"] = str(snakemake.threads)  # read by torch when it is imported
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        force=True)
    if "torch" in sys.modules:  # too late for the environment variable
        sys.modules["torch"].set_num_threads(snakemake.threads)
    if snakemake.config.get("archs"):  # the config's own archs, buildable by name in this job
        from advlayers.core.splitting import register_config_archs

        register_config_archs(snakemake.config)
    log = logging.getLogger(f"workflow.{snakemake.rule}")
    log.info("rule %s, wildcards %s, threads %s, library %s", snakemake.rule, dict(snakemake.wildcards),
             snakemake.threads, SRC)
    return log
