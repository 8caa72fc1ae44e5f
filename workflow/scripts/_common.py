"""Shared set-up of the workflow scripts: log file, stderr (tqdm, warnings) into it, library path, threads."""

import logging
import os
import sys
from pathlib import Path

# The workflow runs this checkout's library (the src/ files its rules list as inputs), installed or not.
SRC = Path(__file__).resolve().parents[2] / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
# tqdm reads its defaults at import: in a log file one progress line every 30 s is plenty.
os.environ.setdefault("TQDM_MININTERVAL", "30")


def setup(snakemake) -> logging.Logger:
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        force=True)
    if snakemake.rule in ("pretrain", "retrain", "evaluate"):
        import torch

        torch.set_num_threads(snakemake.threads)
    log = logging.getLogger(f"workflow.{snakemake.rule}")
    log.info("rule %s, wildcards %s, threads %s", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)
    return log
