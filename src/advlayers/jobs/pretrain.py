"""Pretraining as the workflow and torchrun launch it: one process, or one rank of a DDP group.

    torchrun --standalone --nproc_per_node=8 -m advlayers pretrain --data ... --out ckpt.pt ...

(`advlayers pretrain`, `advlayers.tools.cli`, parses the command line and calls `pretrain_files`; the workflow's
pretrain script calls `run`, in-process when the job has at most one GPU, else under torchrun.)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def _setup_logging(logfile: str | None, rank: int) -> None:
    fmt = f"%(asctime)s rank{rank} %(name)s %(levelname)s %(message)s"
    level = logging.INFO if rank == 0 else logging.WARNING
    if logfile and rank == 0:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(level=level, handlers=[logging.FileHandler(logfile)], format=fmt, force=True)
    elif not logging.getLogger().handlers:  # in-process under a caller that configured logging: leave it
        logging.basicConfig(level=level, stream=sys.stderr, format=fmt)


def _checked_before_joining(data, arch: str, recipe: str, overrides: dict, epoch_eval: dict | None):
    """The resolved recipe; bad settings, arch or data fail here, before the process group is joined."""
    from ..core.epoch_eval import check_settings
    from ..core.models import check_arch
    from ..core.recipes import get_recipe

    resolved = get_recipe(recipe, **overrides)
    if epoch_eval:
        check_settings(epoch_eval)
    check_arch(arch)
    if not Path(data).is_file():
        raise FileNotFoundError(f"prepared dataset {data} does not exist")
    return resolved


def pretrain_files(*, data, arch: str, pretraining: str, recipe: str, overrides: dict, state, out, initial,
                   dataset: str | None = None, width: float = 1.0, seed: int = 0, device: str = "cpu",
                   logfile: str | None = None, threads: int | None = None, epoch_eval: dict | None = None) -> int:
    """Pretrain one net: rank 0 writes the epoch-0 weights to `initial`, then the trained checkpoint to `out`,
    then deletes the resume state `state`. Returns 0, or 128 + signal when preempted (the state is saved).
    `epoch_eval`: held-out evaluation after each epoch (`grid.conf.epoch_eval_settings`), or None."""
    import torch

    from .. import provenance
    from ..core import distributed, epoch_eval as held_out, resume
    from ..core.checkpoints import save_checkpoint
    from ..core.datasets import load_prepared
    from ..core.models import build_model
    from ..core.training import pretrain
    from ..io import sha256_file, state_digest

    if threads:  # the job's cores, shared by its ranks (each also starts DataLoader workers: splits.default_workers)
        torch.set_num_threads(max(1, threads // distributed.env_world_size()))
    resolved = _checked_before_joining(data, arch, recipe, overrides, epoch_eval)
    distributed.init(device)
    try:
        _setup_logging(logfile, distributed.rank())
        prepared = load_prepared(data)
        info = prepared.info
        evaluator = held_out.epoch_evaluator(prepared, dataset or info.name, epoch_eval)
        common = dict(dataset=dataset or info.name, seed=seed, recipe=resolved.as_dict(),
                      inputs={"data": {"path": str(data), "sha256": sha256_file(data)}},
                      pretraining=pretraining, retraining="none", retrained_modules=[], units=[],
                      world_size=distributed.world_size(), recipe_overrides=overrides)
        if distributed.is_main():
            model = build_model(arch, info.num_classes, info.image_size, seed=seed, width=width, mean=info.mean,
                                std=info.std)
            save_checkpoint(initial, model, epoch=0, provenance=provenance.environment(device),
                            cell="initial", epochs=0, **common)
            log.info("wrote the initial weights %s", initial)
        try:
            result = pretrain(arch, prepared, resolved, mode=pretraining, seed=seed, device=device, state_path=state,
                              progress=False, width=width, epoch_eval=evaluator)
        except resume.Preempted as e:
            print(f"advlayers pretrain: {e}", file=sys.stderr)
            return int(e.code)
        # every rank's final parameters: DDP keeps them identical (BatchNorm statistics too with SyncBatchNorm on
        # CUDA); the preflight checklist checks that the ranks agreed
        rank_digests = distributed.all_gather_objects(state_digest(dict(result.model.named_parameters())))
        if distributed.is_main():
            save_checkpoint(out, result.model, epoch=resolved.epochs, rank_digests=rank_digests,
                            provenance=provenance.environment(device, precision=result.precision),
                            cell="pretrained", epochs=resolved.epochs, history=result.history,
                            precision=result.precision, channels_last=result.channels_last,
                            start_digest=result.start_digest, eval_each_epoch=epoch_eval, **common)
            Path(state).unlink(missing_ok=True)  # the checkpoint is complete
            log.info("wrote %s", out)
        distributed.barrier()
    finally:
        distributed.cleanup()
    return 0


def run(*, gpus: int, logfile: str, **files) -> int:
    """The job: `pretrain_files` in this process (at most one GPU: a preempted run returns 128 + signal, the
    state saved), or with gpus > 1 DDP with SyncBatchNorm, one process per GPU under torchrun (rank 0 writes
    the checkpoints and the log)."""
    if gpus <= 1:
        return pretrain_files(**files)
    import json
    import os
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "advlayers", "pretrain", "--logfile", logfile,
               *[f"--{k}={v}" for k, v in files.items() if k not in ("overrides", "epoch_eval")],
               *[f"--override={k}={v!r}" for k, v in files["overrides"].items()],
               *([f"--eval-each-epoch={json.dumps(files['epoch_eval'])}"] if files.get("epoch_eval") else [])]
    log.info("launching %s", " ".join(command))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(command, env=env, stdout=sys.stderr, stderr=sys.stderr).returncode
