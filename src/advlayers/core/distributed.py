"""Multi-process (multi-GPU) training under torch.distributed, and the distributed pretraining CLI.

One process per GPU, launched by ``torchrun`` (inside one SLURM job: ``--standalone`` on one node) running
the ``advlayers pretrain`` command (`advlayers.tools.cli`)::

    torchrun --standalone --nproc_per_node=8 -m advlayers pretrain \\
        --data results/data/imagenet.json --arch resnet50 --pretraining adversarial \\
        --recipe imagenet --seed 0 --device cuda --state results/.state/.../pretrain.pt --out ckpt.pt

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init` joins the process group
from them (NCCL on CUDA, gloo on CPU) and pins each process to GPU LOCAL_RANK. `training.train` notices an
initialised group with more than one process and then

* converts BatchNorm to SyncBatchNorm (CUDA only: PyTorch's SyncBatchNorm has no CPU kernels, so CPU
  ranks keep per-rank BatchNorm statistics) and wraps the model in DistributedDataParallel;
* gives every rank a disjoint, equal slice of each global batch of the epoch's seeded permutation
  (per-rank batch = recipe.batch_size // world_size, so the global batch is the recipe's);
* runs the training attack on each rank's slice with the unwrapped module;
* writes the resume state from rank 0 only.

The same command with WORLD_SIZE unset (plain ``advlayers pretrain ...``) trains in one process. On a
SIGTERM/SIGUSR1 the run saves its state and exits with 128 + the signal number (see `resume.Preempted`);
running the same command again resumes.
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes files."""
    return rank() == 0


def default_backend(device: str | torch.device | None = None) -> str:
    if device is None:
        return "nccl" if torch.cuda.is_available() else "gloo"
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(device: str | torch.device | None = None, *, backend: str | None = None,
         timeout_minutes: float = 30) -> bool:
    """Join the process group described by torchrun's environment variables.

    Returns True when this is a multi-process run (WORLD_SIZE > 1), False (and does nothing) otherwise.
    On CUDA each process is pinned to GPU LOCAL_RANK before the NCCL group is created.
    """
    if is_initialized():
        return is_distributed()
    if env_world_size() <= 1:
        return False
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} are not set; launch with "
                           "torchrun --standalone --nproc_per_node=N ...")
    backend = backend or default_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, init_method="env://", rank=int(os.environ["RANK"]),
                            world_size=env_world_size(), timeout=datetime.timedelta(minutes=timeout_minutes))
    log.info("rank %d/%d joined the %s process group", rank(), world_size(), backend)
    return True


def barrier() -> None:
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def rank_device(device: str | torch.device) -> torch.device:
    """The device of this rank: a bare "cuda" becomes cuda:LOCAL_RANK in a multi-process run."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", local_rank())
    return device


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64); identity outside a multi-process run."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(value: int) -> int:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_objects(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_batchnorm_supported(device: str | torch.device) -> bool:
    """PyTorch's SyncBatchNorm runs on CUDA only (its CPU kernels do not exist: aten::batch_norm_stats)."""
    return torch.device(device).type == "cuda"


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm in place (same parameter and buffer tensors); returns `model`."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm -> BatchNorm2d (same parameter and buffer tensors), so a trained model runs anywhere."""
    if isinstance(module, nn.SyncBatchNorm):
        bn = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            bn.weight, bn.bias = module.weight, module.bias
        if module.track_running_stats:
            bn.running_mean, bn.running_var = module.running_mean, module.running_var
            bn.num_batches_tracked = module.num_batches_tracked
        bn.training = module.training
        return bn
    for name, child in list(module.named_children()):
        new = revert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
