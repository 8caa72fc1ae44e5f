"""Conventional and adversarial (pre)training, and partial retraining with the rest of the net frozen.

Recipes are named presets of `Recipe`; every field can be overridden (`get_recipe(name, **overrides)`).

Frozen means frozen: a frozen parameter has `requires_grad=False` and is not in the optimizer, and every
module outside the trainable units is kept in eval mode, so frozen BatchNorm layers normalise with
their pretrained running statistics and never update them (and frozen dropout is off). Only the
trainable units switch to train mode.

Randomness: one seed fixes everything. Each epoch draws its data order, augmentation and attack noise
from a CPU generator seeded by (seed, epoch); the global RNG (dropout) is saved in the resume state.
On CPU the same call twice gives bit-identical weights, and a resumed run equals an uninterrupted one.

Preemption: with a `state_path`, SIGTERM/SIGUSR1 (what SLURM sends before a kill, `--signal=TERM@120`) make
`train` finish the current batch, save a mid-epoch state (model, optimizer, scheduler, RNGs, completed
epochs, batches done in the current epoch, the epoch generator's state, the epoch's partial sums) and raise
`Preempted` (a SystemExit with code 128 + signal: 143 for SIGTERM). The rerun continues bit-identically (CPU).
State files are written atomically, so a SIGKILL at any moment leaves the previous state intact.

Several processes (torchrun, see `advlayers.distributed`): DDP with SyncBatchNorm on CUDA; each rank takes
an equal slice of every global batch of recipe.batch_size; rank 0 writes the state.

GPU efficiency (no effect on CPU results): recipe.precision="bf16" autocasts training forward passes and
training attacks (evaluation attacks stay fp32), channels_last, compile (torch.compile, CUDA only), the
in-memory split lives on the device and epoch sums stay on it.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks, distributed
from .checkpoints import atomic_save
from .datasets import TensorSplit, _ImageFiles, _progress, augment_batch
from .models import ModularNet, build_model

log = logging.getLogger(__name__)

MODES = ("conventional", "adversarial")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
TRAIN_ATTACKS = ("pgd", "fgsm_rs")
PRECISIONS = ("fp32", "bf16")
STATE_FORMAT = "advlayers-train-state-v1"
REINIT_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run besides model, data, mode and seed."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 300
    schedule: str = "cosine"  # stepped once per epoch
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    # adversarial training attack (paper: Madry PGD-7, eps 8/255, step 2/255, on the predicted label)
    attack: str = "pgd"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 7
    attack_bn_mode: str = "eval"  # BatchNorm during the attack: eval (running stats) or train (batch stats)
    include_clean: bool = True  # adversarial (re)training: clean samples are added to each batch
    precision: str = "fp32"  # bf16 autocast for forward passes of training and training attacks
    channels_last: bool = False
    compile: bool = False  # torch.compile the training forward passes and training attacks (CUDA only)
    train_subset: int | None = None  # use a seeded subset of the training split (demo sizing)

    def __post_init__(self):
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("attack", self.attack, TRAIN_ATTACKS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("attack_bn_mode", self.attack_bn_mode, ("eval", "train"))
        for name in ("lr", "batch_size", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"recipe field {name} must be > 0, got {getattr(self, name)!r}")
        attacks.check_attack_args(self.eps, self.step_size, self.steps)
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def attack_spec(self) -> attacks.AttackSpec:
        if self.attack == "fgsm_rs":
            return attacks.AttackSpec(self.eps, self.step_size, 1, random_start=True)
        return attacks.AttackSpec(self.eps, self.step_size, self.steps, random_start=True)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


_CIFAR = Recipe()  # paper §3.2: Adam 1e-3, batch 128, cosine per epoch, 300 epochs, PGD-7 8/255, 2/255
PRESETS: dict[str, Recipe] = {
    "cifar10": _CIFAR,
    "imagenette": _CIFAR,
    # Paper §3.2: SGD 0.256, momentum 0.875, batch 256, /10 after epochs 30, 60, 90, weight decay 1e-4,
    # FGSM with random start eps 4/255 (step 1.25*eps), no clean samples when retraining. The paper does
    # not state the number of epochs; 100 covers the last decay.
    "imagenet": Recipe(
        optimizer="sgd", lr=0.256, momentum=0.875, weight_decay=1e-4, batch_size=256, epochs=100,
        schedule="step", milestones=(30, 60, 90), gamma=0.1, attack="fgsm_rs", eps=4 / 255,
        step_size=1.25 * 4 / 255, steps=1, include_clean=False,
    ),
    # Embedded demo (mnist5k, 2 CPU cores): the CIFAR recipe shortened. eps 0.1 (~25/255) because 8/255
    # barely dents an MNIST classifier; step eps/4 as in the paper's 2/255 : 8/255.
    "mnist5k-demo": replace(_CIFAR, epochs=4, eps=0.1, step_size=0.025, precision="bf16", channels_last=True),
}


def get_recipe(name: str = "cifar10", **overrides) -> Recipe:
    if name not in PRESETS:
        raise ValueError(f"unknown recipe {name!r}; valid choices: {', '.join(PRESETS)}")
    valid = {f.name for f in fields(Recipe)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown recipe field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------- freezing


def check_units(model: ModularNet, units: list[str]) -> list[str]:
    names = dict(model.named_modules())
    bad = [u for u in units if u not in names or u == ""]
    if bad:
        raise ValueError(f"unknown module name(s) {bad}; valid: m0..m5 or qualified layer names such as 'm2.0.conv1'")
    return list(units)


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


def set_train_modes(model: ModularNet, units: list[str] | None) -> None:
    """Train mode inside the trainable units only; frozen modules (their BatchNorm, dropout) stay in eval."""
    if units is None:
        model.train()
        return
    model.eval()
    for u in units:
        model.get_submodule(u).train()


def reinitialize(model: ModularNet, units: list[str], seed: int) -> ModularNet:
    """Replace the parameters and buffers of `units` by a fresh torchvision initialisation drawn from `seed`
    (BatchNorm: weight 1, bias 0, running mean 0, running var 1, batch counter 0)."""
    check_units(model, units)
    fresh = build_model(model.spec.arch, model.spec.num_classes, model.spec.image_size, seed=seed)
    with torch.no_grad():
        for u in units:
            src = fresh.get_submodule(u).state_dict()
            model.get_submodule(u).load_state_dict(src)  # copies in place, onto the model's device
    return model


# --------------------------------------------------------------------------- training loop


@dataclass
class TrainResult:
    model: ModularNet
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0
    resumed_from_batch: int = 0  # batches of epoch `resumed_from_epoch` already done when resumed mid-epoch


class Preempted(SystemExit):
    """`train` got SIGTERM/SIGUSR1 (SLURM's warning before a kill): it finished the current batch, saved a
    resume state and stops. A SystemExit (code 128 + signal number, 143 for SIGTERM), so an uncaught one
    ends the process with a non-zero status, Snakemake marks the job failed, and a rerun resumes."""

    def __init__(self, signum: int, epoch: int, batch: int, state_path):
        super().__init__(128 + signum)
        self.signum, self.epoch, self.batch, self.state_path = signum, epoch, batch, state_path

    def __str__(self):
        return (f"preempted by signal {self.signum} at epoch {self.epoch + 1}, batch {self.batch}; "
                f"state saved to {self.state_path}")


PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class _PreemptionFlag:
    """Records SIGTERM/SIGUSR1 instead of dying while installed (main thread only; restored on exit)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum = 0
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if not self.signum:
            log.warning("got signal %d: saving the training state after the current batch", signum)
        self.signum = signum

    def __enter__(self):
        if self.enabled:
            for s in PREEMPT_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    def poll(self) -> int:
        """The signal number (0 = none), agreed over all ranks so that they stop at the same batch."""
        return distributed.all_reduce_max(self.signum) if distributed.is_distributed() else self.signum


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


def num_batches(split, batch_size: int) -> int:
    """Training batches per epoch (the last incomplete global batch is dropped)."""
    return len(split) // batch_size


def epoch_batches(split, batch_size: int, generator: torch.Generator, *, rank: int = 0, world_size: int = 1,
                  start: int = 0, generator_state: torch.Tensor | None = None, device="cpu",
                  progress: str | None = None):
    """This rank's slices of an epoch's training batches, from batch `start` on: yields (index, x, y).

    Global batch i is the i-th run of `batch_size` samples of the epoch's permutation (drawn first from
    `generator`); rank r takes its r-th slice of batch_size // world_size samples, so the ranks' slices are
    disjoint and equal and their union is the single-process batch.

    In-memory splits: the same draws in the same order as ``TensorSplit.batches(batch_size, shuffle=True,
    augment=True, drop_last=True)`` (each global batch is augmented whole, then sliced), so one process gives
    exactly its batches. Folder splits: one seed draw (as ``FolderSplit.batches``) fixes the permutation and
    every image's augmentation; each rank decodes only its own images.

    Resuming mid-epoch: `start` > 0 and the `generator_state` saved after batch start-1; the permutation is
    re-drawn from the fresh `generator`, then the generator continues from the saved state.
    """
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
    local = batch_size // world_size
    lo, hi = rank * local, (rank + 1) * local
    count = num_batches(split, batch_size)
    device = torch.device(device)
    if isinstance(split, TensorSplit):
        order = torch.randperm(len(split), generator=generator).to(split.x.device)
        prelude = None
    else:
        seed = int(torch.randint(2**62, (), generator=generator))
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
        prelude = seed
    if generator_state is not None:
        generator.set_state(generator_state)
    steps = _progress(range(start, count), count - start, progress)
    if isinstance(split, TensorSplit):
        augment = split.augment.crop_padding > 0 or split.augment.flip
        for i in steps:
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = split.x[idx]
            if augment:
                x = augment_batch(x, split.augment, generator)
            x, y = x[lo:hi], split.y[idx][lo:hi]
            yield i, x.to(device, non_blocking=True).float().div_(255), y.to(device, non_blocking=True)
        return
    slices = [order[i * batch_size + lo:i * batch_size + hi].tolist() for i in range(start, count)]
    loader = torch.utils.data.DataLoader(
        _ImageFiles(split.samples, split.transform(True), prelude), batch_sampler=slices,
        num_workers=split.num_workers, pin_memory=device.type == "cuda",
    )
    for i, (x, y) in zip(steps, loader):
        yield i, x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _compile_enabled(recipe: Recipe, device: torch.device) -> bool:
    if not recipe.compile:
        return False
    if device.type != "cuda":
        log.info("recipe.compile ignored on %s: torch.compile is used on CUDA only", device)
        return False
    return True


def train(
    model: ModularNet,
    split,
    recipe: Recipe,
    *,
    mode: str,
    seed: int,
    units: list[str] | None = None,
    device: str | torch.device = "cpu",
    state_path: str | Path | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, ModularNet], None] | None = None,
    on_batch_end: Callable[[int, int, ModularNet], None] | None = None,
    handle_signals: bool = True,
) -> TrainResult:
    """Train the `units` of `model` (None = the whole net) on `split` for `recipe.epochs` epochs.

    mode="adversarial": each batch is attacked with the recipe's attack on the model's predicted labels
    and the loss is taken on the true labels of the adversarial (plus, with include_clean, the clean)
    samples. With `state_path`, the full training state is saved atomically after every epoch and a
    later call with the same arguments resumes from it.

    Preemption (with `state_path` and `handle_signals`): SIGTERM or SIGUSR1 lets the current batch finish,
    saves a mid-epoch state (epoch, batches done, the epoch generator's state, partial epoch sums) and
    raises `Preempted`; a rerun continues bit-identically on CPU.

    Inside an initialised torch.distributed group of N > 1 processes (see `advlayers.distributed`): DDP,
    SyncBatchNorm on CUDA, each rank trains on its 1/N slice of every global batch of recipe.batch_size,
    and only rank 0 writes the state. `on_batch_end(epoch, batches_done, model)` is called after every
    optimizer step.
    """
    _choice("mode", mode, MODES)
    ddp = distributed.is_distributed()
    rank, world = distributed.rank(), distributed.world_size()
    device = distributed.rank_device(device)
    if recipe.batch_size % world:
        raise ValueError(f"recipe batch_size {recipe.batch_size} is not divisible by the {world} processes")
    params = freeze_except(model, units)
    if not params:
        raise ValueError("nothing to train: the trainable units have no parameters")
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    sync_bn = ddp and distributed.sync_batchnorm_supported(device)
    if sync_bn:
        distributed.convert_sync_batchnorm(model)  # in place: same parameter and buffer tensors
    elif ddp and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning("SyncBatchNorm needs CUDA: on %s each rank normalises with its own batch statistics", device)
    model.to(device=device, memory_format=memory_format)
    autocast = torch.bfloat16 if recipe.precision == "bf16" else None
    optimizer = _make_optimizer(params, recipe)
    scheduler = _make_scheduler(optimizer, recipe)
    if recipe.train_subset:
        split = split.subset(recipe.train_subset, seed=seed)
    split = split.to(device)
    fingerprint = _fingerprint(recipe, mode, seed, units, model)
    count = num_batches(split, recipe.batch_size)
    if count == 0:
        raise ValueError(f"the training split ({len(split)} samples) is smaller than one batch ({recipe.batch_size})")

    result = TrainResult(model)
    resume = _Resume()
    if state_path is not None and distributed.is_main():
        _remove_stale_temporaries(state_path)
    if state_path is not None and Path(state_path).exists():
        resume = _load_state(state_path, fingerprint, model, optimizer, scheduler, result, device)
    elif ddp and rank:
        torch.manual_seed(seed * 1_009 + rank)  # distinct dropout streams per rank (rank 0 keeps the caller's)

    net = model
    if ddp:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    attack_net = model  # the unwrapped module: attack passes need no gradient synchronisation
    if _compile_enabled(recipe, device):
        attack_net = torch.compile(model)
        net = torch.compile(net) if ddp else attack_net

    attack_spec = recipe.attack_spec()
    try:
        with _PreemptionFlag(handle_signals and state_path is not None) as flag:
            for epoch in range(resume.epoch, recipe.epochs):
                t0 = time.perf_counter()
                generator = _epoch_generator(seed, epoch)
                set_train_modes(model, units)
                mid = epoch == resume.epoch and resume.batch > 0
                start = resume.batch if mid else 0
                # this rank's running sums of loss * n, correct, seen; summed on the device (no host sync per
                # batch) in float64, the precision of the Python floats they replace; a resumed epoch continues
                # the same sequence of additions
                sums = resume.sums if mid else (0.0, 0, 0)
                loss_sum = torch.tensor(float(sums[0]), dtype=torch.float64, device=device)
                correct = torch.tensor(int(sums[1]), dtype=torch.int64, device=device)
                seen = int(sums[2])
                desc = f"{mode} epoch {epoch + 1}/{recipe.epochs}" if progress and distributed.is_main() else None
                batches = epoch_batches(
                    split, recipe.batch_size, generator, rank=rank, world_size=world, start=start,
                    generator_state=resume.generator if mid else None, device=device, progress=desc,
                )
                for i, x, y in batches:
                    x = x.contiguous(memory_format=memory_format)
                    if mode == "adversarial":
                        attack_gen = generator if not ddp else _rank_attack_generator(seed, epoch, i, rank)
                        target = attacks.predicted_labels(attack_net, x, bn_mode=recipe.attack_bn_mode,
                                                          autocast=autocast)
                        x_adv = attacks.perturb(attack_net, x, target, attack_spec, bn_mode=recipe.attack_bn_mode,
                                                generator=attack_gen, autocast=autocast)
                        inputs, labels = (x_adv, y)
                        if recipe.include_clean:
                            inputs, labels = torch.cat([x, x_adv]), torch.cat([y, y])
                    else:
                        inputs, labels = x, y
                    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                        logits = net(inputs)
                    loss = F.cross_entropy(logits.float(), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach().double() * labels.numel()
                    correct += (logits.argmax(1) == labels).sum()
                    seen += labels.numel()
                    if on_batch_end is not None:
                        on_batch_end(epoch, i + 1, model)
                    if i + 1 < count:
                        signum = flag.poll()
                        if signum:
                            _preempt(signum, state_path, fingerprint, epoch, i + 1, model, optimizer, scheduler,
                                     result, generator, [loss_sum.item(), correct.item(), seen], device)
                scheduler.step()
                sums = [loss_sum.item(), correct.item(), seen]
                total_loss, total_correct, total_seen = distributed.all_reduce_sum(sums)
                record = {
                    "epoch": epoch + 1,
                    "loss": total_loss / max(total_seen, 1),
                    "train_acc": total_correct / max(total_seen, 1),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,
                }
                result.history.append(record)
                log.info("epoch %d/%d loss %.4f acc %.4f (%.1fs)", epoch + 1, recipe.epochs, record["loss"],
                         record["train_acc"], record["seconds"])
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {record['loss']})")
                if state_path is not None:
                    _save_state(state_path, fingerprint, epoch + 1, model, optimizer, scheduler, result, device)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, model)
                if epoch + 1 < recipe.epochs:
                    signum = flag.poll()
                    if signum:
                        distributed.barrier()  # the state is on disk before any rank exits
                        raise Preempted(signum, epoch + 1, 0, state_path)
    finally:
        if sync_bn:
            distributed.revert_sync_batchnorm(model)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    for p in model.parameters():
        p.requires_grad_(True)
    return result


def _fingerprint(recipe: Recipe, mode, seed, units, model) -> dict:
    r = recipe.as_dict()
    r.pop("compile")  # how the forward pass is executed, not what is trained: a state resumes either way
    return {"recipe": r, "mode": mode, "seed": seed, "units": units, "arch": model.spec.arch}


def _preempt(signum, state_path, fingerprint, epoch, batch, model, optimizer, scheduler, result, generator,
             sums, device):
    sums = distributed.all_gather_objects(sums)  # per-rank partial sums (the epoch's record sums them)
    _save_state(state_path, fingerprint, epoch, model, optimizer, scheduler, result, device,
                batch=batch, generator=generator.get_state(), sums=sums)
    distributed.barrier()  # the state is on disk before any rank exits
    err = Preempted(signum, epoch, batch, state_path)
    log.warning("%s", err)
    raise err


def _remove_stale_temporaries(state_path) -> None:
    """Temporary files of `atomic_save` left beside the state by a run killed (SIGKILL) while saving."""
    path = Path(state_path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


@dataclass
class _Resume:
    epoch: int = 0  # completed epochs
    batch: int = 0  # batches of epoch `epoch` done (mid-epoch state)
    generator: torch.Tensor | None = None  # the epoch generator's state after those batches
    sums: tuple = (0.0, 0, 0)  # this rank's partial epoch sums: loss * n, correct, seen


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _save_state(path, fingerprint, epoch, model, optimizer, scheduler, result: TrainResult, device=None, *,
                batch: int = 0, generator: torch.Tensor | None = None, sums: list | None = None):
    """Collective in a multi-process run (gathers every rank's RNG state); rank 0 writes."""
    rngs = distributed.all_gather_objects(_rng_state(torch.device(device or "cpu")))
    if not distributed.is_main():
        return
    state = {
        "format": STATE_FORMAT,
        "fingerprint": fingerprint,
        "epoch": epoch,  # completed epochs
        "batch": batch,  # > 0: batches of the next epoch already done (preempted mid-epoch)
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "rng_ranks": rngs,
        "history": result.history,
    }
    if batch:
        state["generator"] = generator
        state["sums"] = sums
    atomic_save(state, path)


def _load_state(path, fingerprint, model, optimizer, scheduler, result: TrainResult, device=None) -> _Resume:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        log.warning("ignoring unreadable training state %s (%s); starting from epoch 0", path, e)
        return _Resume()
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("fingerprint") != fingerprint:
        log.warning("training state %s belongs to another run; starting from epoch 0", path)
        return _Resume()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rank, world = distributed.rank(), distributed.world_size()
    rngs = state.get("rng_ranks")
    if rngs and len(rngs) == world:
        torch.set_rng_state(rngs[rank]["cpu"])
        if "cuda" in rngs[rank] and device is not None and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(rngs[rank]["cuda"], torch.device(device))
    else:
        torch.set_rng_state(state["torch_rng"])
    result.history = list(state["history"])
    resume = _Resume(epoch=state["epoch"], batch=state.get("batch", 0))
    if resume.batch:
        resume.generator = state["generator"]
        sums = state["sums"]
        # per-rank sums; resumed with another number of processes, rank 0 carries them all
        resume.sums = tuple(sums[rank]) if len(sums) == world else (
            tuple(map(sum, zip(*sums))) if rank == 0 else (0.0, 0, 0))
    result.resumed_from_epoch, result.resumed_from_batch = resume.epoch, resume.batch
    log.info("resumed from %s at epoch %d, batch %d", path, resume.epoch, resume.batch)
    return resume


# --------------------------------------------------------------------------- protocol entry points


def pretrain(
    arch: str,
    dataset,
    recipe: Recipe,
    *,
    mode: str,
    seed: int,
    device="cpu",
    state_path=None,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh `arch` on `dataset.train` conventionally or adversarially.

    The initial weights (epoch 0, needed for layer re-initialisation) are `build_model(..., seed=seed)`.
    """
    torch.manual_seed(seed)
    model = build_model(arch, dataset.info.num_classes, dataset.info.image_size, seed=seed)
    return train(model, dataset.train, recipe, mode=mode, seed=seed, device=device, state_path=state_path,
                 progress=progress)


def retrain(
    model: ModularNet,
    dataset,
    recipe: Recipe,
    *,
    units: list[str],
    mode: str,
    seed: int,
    device="cpu",
    state_path=None,
    progress: bool = True,
) -> TrainResult:
    """Re-initialise `units` (fresh initialisation drawn from `seed`) and train only them; the rest is frozen.

    Paper protocol: mode="adversarial" for a conventionally pretrained net, "conventional" for an
    adversarially pretrained one.
    """
    torch.manual_seed(seed)
    check_units(model, units)
    if units:
        # A stream distinct from pretraining's (which used `seed`): a fresh draw, not a rewind to epoch 0.
        reinitialize(model, units, seed=REINIT_SEED_OFFSET + seed)
    else:
        # An empty set (cut-off 0 'before', the full-subset complement in combinations) is the pretrained net.
        return TrainResult(model.eval())
    return train(model, dataset.train, recipe, mode=mode, seed=seed, units=units, device=device,
                 state_path=state_path, progress=progress)
