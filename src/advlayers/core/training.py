"""Conventional and adversarial (pre)training, and partial retraining with the rest of the net frozen.

Frozen means frozen: a frozen parameter has `requires_grad=False` and is not in the optimizer, and every
module outside the trainable units is kept in eval mode, so frozen BatchNorm layers normalise with their
pretrained running statistics and never update them (and frozen dropout is off). Only the trainable units
switch to train mode.

Randomness: one seed fixes everything. Each epoch draws its data order, augmentation and attack noise from a
CPU generator seeded by (seed, epoch); the global RNG (dropout) is saved in the resume state. On CPU the same
call twice gives bit-identical weights, and a resumed run equals an uninterrupted one (`advlayers.core.resume`).

Several processes (torchrun, see `advlayers.core.distributed`): DDP with SyncBatchNorm on CUDA; each rank takes an
equal slice of every global batch of recipe.batch_size; rank 0 writes the state.

Precision: `recipes.resolve_precision` (bf16 autocast + channels_last only where the device computes bf16
natively); training attacks use the same autocast, evaluation attacks stay fp32.

Length: the loop itself is `train` (set-up -> `train_epoch` -> `_end_epoch` -> teardown); the rest are
the protocol's entry points (`pretrain`, `retrain`) and what they need. (What the workflow's jobs do around
them, checkpoints and inputs: `advlayers.jobs`.)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice, check_int
from ..grid import vocabulary as vocab
from ..io import state_digest
from . import attacks, distributed, resume
from .models import ModularNet, build_model, layers
from .recipes import Recipe, resolve_precision
from .splits import epoch_batches, num_batches

log = logging.getLogger(__name__)

MODES = vocab.PRETRAININGS  # a training mode is what a pretraining is called
REDRAW_SEED_OFFSET = vocab.REDRAW_SEED_OFFSET  # retraining's fresh draw: a stream distinct from pretraining's seed


# --------------------------------------------------------------------------- what is trained


def check_units(model: ModularNet, units: list[str]) -> list[str]:
    names = dict(model.named_modules())
    bad = [u for u in units if u not in names or u == ""]
    if bad:
        raise ValueError(f"unknown module name(s) {bad}; valid: m0..m{len(model) - 1} or qualified layer names such as "
                         "'m2.0.conv1'")
    return list(units)


def cell_units(model: ModularNet, cell: str) -> list[str]:
    """The units (module or qualified layer names) a grid cell retrains: 'm110000' -> ['m0', 'm1'],
    'l0-7' -> the conv/BN names of layers 0..6 (`advlayers.grid` cells)."""
    if cell.startswith("m"):
        return list(vocab.mask_modules(cell[1:], len(model)))  # as many bits as the net has modules
    all_layers = layers(model)
    if model.spec.arch in vocab.LAYER_COUNTS and len(all_layers) != vocab.LAYER_COUNTS[model.spec.arch]:
        raise ValueError(f"{model.spec.arch} has {len(all_layers)} layers, the grid expects "
                         f"{vocab.LAYER_COUNTS[model.spec.arch]}")
    return [name for i in vocab.cell_layers(model.spec.arch, cell) for name in all_layers[i].names]


def freeze_except(model: ModularNet, units: list[str] | None) -> list[nn.Parameter]:
    """requires_grad on for the parameters inside `units` (None = all), off elsewhere; returns the trainable."""
    if units is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    check_units(model, units)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: dict[int, nn.Parameter] = {}
    for u in units:
        for p in model.get_submodule(u).parameters():
            p.requires_grad_(True)
            trainable[id(p)] = p
    return list(trainable.values())


def set_train_modes(model: ModularNet, units: list[str] | None, frozen_bn: str = "eval") -> None:
    """Train mode inside the trainable units only; frozen modules (their BatchNorm, dropout) stay in eval.

    frozen_bn="adapt" (an ablation, not the protocol): frozen BatchNorm layers also go to train mode, so their
    running statistics follow the retraining batches; their weight and bias stay frozen (requires_grad off)."""
    if units is None:
        model.train()
        return
    model.eval()
    if frozen_bn == "adapt":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    for u in units:
        model.get_submodule(u).train()


def redraw(model: ModularNet, units: list[str], seed: int) -> ModularNet:
    """Replace the parameters and buffers of `units` by a fresh torchvision initialisation drawn from `seed`
    (BatchNorm: weight 1, bias 0, running mean 0, running var 1, batch counter 0). In place."""
    check_units(model, units)
    spec = model.spec
    fresh = build_model(spec.arch, spec.num_classes, spec.image_size, seed=seed, width=spec.width, mean=spec.mean,
                        std=spec.std)
    with torch.no_grad():
        for u in units:
            model.get_submodule(u).load_state_dict(fresh.get_submodule(u).state_dict())  # copies onto model's device
    return model


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    model: ModularNet
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0
    resumed_from_batch: int = 0  # batches of epoch `resumed_from_epoch` already done when resumed mid-epoch
    precision: str = "fp32"  # what the run actually used (recipes.resolve_precision)
    channels_last: bool = False
    start_digest: str = ""  # content hash of the weights training started from


@dataclass
class _Run:
    """Everything the epochs of one `train` call share."""

    model: ModularNet
    net: nn.Module  # the module the training step calls (DDP / compiled wrapper of `model`)
    attack_net: nn.Module  # the module training attacks call (unwrapped)
    split: object
    recipe: Recipe
    mode: str
    seed: int
    units: list[str] | None
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: object
    autocast: torch.dtype | None
    memory_format: torch.memory_format
    state_path: Path | None
    fingerprint: dict
    resume: resume.Resume
    result: TrainResult
    sync_bn: bool
    progress: bool
    on_batch_end: Callable | None
    batches: int = 0


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _rank_attack_generator(seed: int, epoch: int, batch: int, rank: int) -> torch.Generator:
    # Multi-process runs: attack noise of each rank's slice from its own stream, stateless per batch so a
    # mid-epoch resume needs no per-rank generator state.
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + batch) * 1_009 + rank + 1)


def _make_optimizer(params, recipe: Recipe):
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def _make_scheduler(optimizer, recipe: Recipe):
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _setup(model, split, recipe, mode, seed, units, device, state_path, progress, on_batch_end, epoch_eval) -> _Run:
    """Freeze, place, resolve precision, build optimizer and scheduler, load a matching resume state, wrap."""
    check_choice("mode", mode, MODES)
    check_int("seed", seed, minimum=0)
    ddp, rank, world = distributed.is_distributed(), distributed.rank(), distributed.world_size()
    device = distributed.rank_device(device)
    if recipe.batch_size % world:
        raise ValueError(f"recipe batch_size {recipe.batch_size} is not divisible by the {world} processes")
    params = freeze_except(model, units)
    if not params:
        raise ValueError("nothing to train: the trainable units have no parameters")
    precision, channels_last = resolve_precision(recipe, device)
    log.info("precision %s, channels_last %s on %s", precision, channels_last, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    sync_bn = ddp and distributed.sync_batchnorm_supported(device)
    if sync_bn:
        distributed.convert_sync_batchnorm(model)  # in place: same parameter and buffer tensors
    elif ddp and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning("SyncBatchNorm needs CUDA: on %s each rank normalises with its own batch statistics", device)
    start_digest = state_digest(model.state_dict())
    model.to(device=device, memory_format=memory_format)
    optimizer, scheduler = _make_optimizer(params, recipe), None
    scheduler = _make_scheduler(optimizer, recipe)
    if recipe.train_subset:
        split = split.subset(recipe.train_subset, seed=seed)
    split = split.to(device)
    if num_batches(split, recipe.batch_size) == 0:
        raise ValueError(f"the training split ({len(split)} samples) is smaller than one batch ({recipe.batch_size})")
    fp = resume.fingerprint(recipe, mode, seed, units, model.spec.arch, start_digest)
    if epoch_eval is not None:  # a state without (or with other) per-epoch evaluations is not resumed
        fp["epoch_eval"] = epoch_eval.settings
    state = resume.Resume()
    if state_path is not None:
        state_path = Path(state_path)
        if distributed.is_main():
            resume.remove_stale_temporaries(state_path)
        state = resume.load_state(state_path, fp, model, optimizer, scheduler, device)
    if not state.epoch and not state.batch and ddp and rank:
        torch.manual_seed(seed * 1_009 + rank)  # distinct dropout streams per rank (rank 0 keeps the caller's)
    result = TrainResult(model, list(state.history or []), state.epoch, state.batch, precision, channels_last,
                         start_digest)
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if ddp else model
    attack_net = model  # the unwrapped module: attack passes need no gradient synchronisation
    if recipe.compile and device.type == "cuda":
        attack_net = torch.compile(model)
        net = torch.compile(net) if ddp else attack_net
    elif recipe.compile:
        log.info("recipe.compile ignored on %s: torch.compile is used on CUDA only", device)
    autocast = torch.bfloat16 if precision == "bf16" else None
    return _Run(model, net, attack_net, split, recipe, mode, seed, units, device, optimizer, scheduler, autocast,
                memory_format, state_path, fp, state, result, sync_bn, progress, on_batch_end,
                num_batches(split, recipe.batch_size))


def _batch_inputs(run: _Run, x, y, generator):
    """The training batch: clean, or the adversarial examples (on the predicted label) plus, with
    include_clean, the clean samples."""
    if run.mode == "conventional":
        return x, y
    bn_mode = run.recipe.attack_bn_mode
    target = attacks.predicted_labels(run.attack_net, x, bn_mode=bn_mode, autocast=run.autocast)
    x_adv = attacks.perturb(run.attack_net, x, target, run.recipe.attack_spec(), bn_mode=bn_mode,
                            generator=generator, autocast=run.autocast)
    if run.recipe.include_clean:
        return torch.cat([x, x_adv]), torch.cat([y, y])
    return x_adv, y


def train_epoch(run: _Run, epoch: int, flag: resume.PreemptionFlag) -> dict:
    """One epoch (or the rest of a preempted one); returns its record. Saves a mid-epoch state and raises
    `resume.Preempted` when a preemption signal arrives."""
    t0 = time.perf_counter()
    generator = _epoch_generator(run.seed, epoch)
    set_train_modes(run.model, run.units, run.recipe.frozen_bn)
    mid = epoch == run.resume.epoch and run.resume.batch > 0
    # running sums of loss * n, correct, seen on the device (no host sync per batch), in float64; a resumed
    # epoch continues the same sequence of additions
    sums = run.resume.sums if mid else (0.0, 0, 0)
    loss_sum = torch.tensor(float(sums[0]), dtype=torch.float64, device=run.device)
    correct = torch.tensor(int(sums[1]), dtype=torch.int64, device=run.device)
    seen = int(sums[2])
    rank, world = distributed.rank(), distributed.world_size()
    desc = f"{run.mode} epoch {epoch + 1}/{run.recipe.epochs}" if run.progress and distributed.is_main() else None
    for i, x, y in epoch_batches(run.split, run.recipe.batch_size, generator, rank=rank, world_size=world,
                                 start=run.resume.batch if mid else 0,
                                 generator_state=run.resume.generator if mid else None, device=run.device,
                                 progress=desc):
        x = x.contiguous(memory_format=run.memory_format)
        attack_gen = generator if world == 1 else _rank_attack_generator(run.seed, epoch, i, rank)
        inputs, labels = _batch_inputs(run, x, y, attack_gen)
        with torch.autocast(run.device.type, dtype=run.autocast, enabled=run.autocast is not None):
            logits = run.net(inputs)
        loss = F.cross_entropy(logits.float(), labels)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        loss_sum += loss.detach().double() * labels.numel()
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.numel()
        if run.on_batch_end is not None:
            run.on_batch_end(epoch, i + 1, run.model)
        if i + 1 < run.batches and (signum := flag.poll()):
            _preempt(run, signum, epoch, i + 1, generator, [loss_sum.item(), correct.item(), seen])
    run.scheduler.step()
    total_loss, total_correct, total_seen = distributed.all_reduce_sum([loss_sum.item(), correct.item(), seen])
    return {"epoch": epoch + 1, "loss": total_loss / max(total_seen, 1), "train_acc": total_correct / max(total_seen, 1),
            "lr": run.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}


def _preempt(run: _Run, signum, epoch, batch, generator, sums):
    sums = distributed.all_gather_objects(sums)  # per-rank partial sums (the epoch's record sums them)
    resume.save_state(run.state_path, run.fingerprint, epoch, run.model, run.optimizer, run.scheduler,
                      run.result.history, run.device, batch=batch, generator=generator.get_state(), sums=sums)
    distributed.barrier()  # the state is on disk before any rank exits
    err = resume.Preempted(signum, epoch, batch, run.state_path)
    log.warning("%s", err)
    raise err


def _end_epoch(run: _Run, record: dict, flag: resume.PreemptionFlag, on_epoch_end) -> None:
    """Log, check for divergence, save the state, then stop between epochs if a signal came."""
    epoch = record["epoch"]
    run.result.history.append(record)
    log.info("epoch %d/%d loss %.4f acc %.4f (%.1fs)%s", epoch, run.recipe.epochs, record["loss"],
             record["train_acc"], record["seconds"], "" if "heldout_clean_acc" not in record else
             f"; held-out clean {record['heldout_clean_acc']:.4f} robust {record['heldout_robust_acc']:.4f}")
    if not math.isfinite(record["loss"]):
        raise FloatingPointError(f"training diverged at epoch {epoch} (loss {record['loss']})")
    if run.state_path is not None:
        resume.save_state(run.state_path, run.fingerprint, epoch, run.model, run.optimizer, run.scheduler,
                          run.result.history, run.device)
    if on_epoch_end is not None:
        on_epoch_end(epoch, run.model)
    if epoch < run.recipe.epochs and (signum := flag.poll()):
        distributed.barrier()  # the state is on disk before any rank exits
        raise resume.Preempted(signum, epoch, 0, run.state_path)


def _teardown(run: _Run) -> None:
    if run.sync_bn:
        distributed.revert_sync_batchnorm(run.model)
    run.model.eval()
    run.model.to(memory_format=torch.contiguous_format)
    for p in run.model.parameters():
        p.requires_grad_(True)


def train(model: ModularNet, split, recipe: Recipe, *, mode: str, seed: int, units: list[str] | None = None,
          device: str | torch.device = "cpu", state_path=None, progress: bool = True,
          on_epoch_end: Callable[[int, ModularNet], None] | None = None,
          on_batch_end: Callable[[int, int, ModularNet], None] | None = None,
          handle_signals: bool = True, epoch_eval=None) -> TrainResult:
    """Train the `units` of `model` (None = the whole net) on `split` for `recipe.epochs` epochs.

    mode="adversarial": each batch is attacked with the recipe's attack on the model's predicted labels and
    the loss is taken on the true labels of the adversarial (plus, with include_clean, the clean) samples.
    With `state_path`, the full training state is saved atomically after every epoch and a later call with
    the same arguments and starting weights resumes from it; with `handle_signals`, SIGTERM/SIGUSR1/SIGINT
    save a mid-epoch state and raise `resume.Preempted`. `on_batch_end(epoch, batches_done, model)` is called
    after every optimizer step. `epoch_eval` (`epoch_eval.EpochEval`): each epoch's held-out evaluation, added to
    its record before the state is saved.
    """
    run = _setup(model, split, recipe, mode, seed, units, device, state_path, progress, on_batch_end, epoch_eval)
    try:
        with resume.PreemptionFlag(handle_signals and state_path is not None) as flag:
            for epoch in range(run.resume.epoch, recipe.epochs):
                record = train_epoch(run, epoch, flag)
                _end_epoch(run, {**record, **(epoch_eval(run.model, run.device) if epoch_eval else {})}, flag,
                           on_epoch_end)
    finally:
        _teardown(run)
    return run.result


# --------------------------------------------------------------------------- protocol entry points


def pretrain(arch: str, dataset, recipe: Recipe, *, mode: str, seed: int, device="cpu", state_path=None,
             progress: bool = True, width: float = 1.0, epoch_eval=None) -> TrainResult:
    """Train a fresh `arch` on `dataset.train` conventionally or adversarially.

    Adversarial pretraining follows Madry et al.: adversarial examples only (recipe.include_clean is for
    retraining, paper §3.2). The initial weights (epoch 0, Fig. 7's rewind source) are
    `build_model(..., seed=seed, width=width)`.
    """
    torch.manual_seed(seed)
    model = build_model(arch, dataset.info.num_classes, dataset.info.image_size, seed=seed, width=width,
                        mean=dataset.info.mean, std=dataset.info.std)
    return train(model, dataset.train, replace(recipe, include_clean=False), mode=mode, seed=seed, device=device,
                 state_path=state_path, progress=progress, epoch_eval=epoch_eval)


def retrain(model: ModularNet, dataset, recipe: Recipe, *, units: list[str], mode: str, seed: int, device="cpu",
            state_path=None, progress: bool = True, epoch_eval=None) -> TrainResult:
    """Re-initialise `units` (a fresh draw from `seed`, not a rewind) and train only them; the rest is frozen.

    Paper protocol: mode="adversarial" for a conventionally pretrained net, "conventional" for an
    adversarially pretrained one.
    """
    torch.manual_seed(seed)
    check_units(model, units)
    if not units:  # nothing retrained: the pretrained net
        return TrainResult(model.eval())
    redraw(model, units, seed=REDRAW_SEED_OFFSET + seed)
    return train(model, dataset.train, recipe, mode=mode, seed=seed, units=units, device=device,
                 state_path=state_path, progress=progress, epoch_eval=epoch_eval)
