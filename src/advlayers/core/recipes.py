"""Training recipes: the paper's presets, their overrides, and the precision that fits the hardware.

Torch is imported only to resolve `precision="auto"` on a device, so the workflow and the cost model can read
recipes without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace

from ..checks import check_choice, check_int, check_number
from ..grid.vocabulary import RECIPES

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
TRAIN_ATTACKS = ("pgd", "fgsm_rs")
PRECISIONS = ("auto", "fp32", "bf16")
ATTACK_BN_MODES = ("keep", "eval")
FROZEN_BN = ("eval", "adapt")
PRECISION_ENV = "ADVLAYERS_PRECISION"  # forces what precision="auto" resolves to (e.g. fp32 on a bf16 CPU)


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
    # BatchNorm while crafting training attacks: "keep" = the model's training modes (the trained layers use
    # batch statistics, as in Madry et al.'s and Wong et al.'s reference code), "eval" = running statistics
    attack_bn_mode: str = "keep"
    # Adversarial *retraining* adds the clean samples to each batch (paper §3.2, CIFAR-10 and Imagenette);
    # adversarial *pretraining* never does (Madry's recipe), see `training.pretrain`.
    include_clean: bool = True
    # Frozen modules' BatchNorm: "eval" (the protocol: running statistics kept, frozen means frozen) or "adapt"
    # (an ablation: their running statistics follow the retraining data; affine parameters stay frozen)
    frozen_bn: str = "eval"
    precision: str = "auto"  # "auto": bf16 where the device computes it natively, else fp32 (`resolve_precision`)
    channels_last: bool | None = None  # None: with bf16 only (where it measured faster)
    compile: bool = False  # torch.compile the training forward passes and training attacks (CUDA only)
    train_subset: int | None = None  # use a seeded subset of the training split (demo sizing)

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("attack", self.attack, TRAIN_ATTACKS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("attack_bn_mode", self.attack_bn_mode, ATTACK_BN_MODES)
        check_choice("frozen_bn", self.frozen_bn, FROZEN_BN)
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            check_number(f"recipe field {name}", getattr(self, name), minimum=0, strict=name in ("lr", "gamma"))
        check_int("recipe field batch_size", self.batch_size, minimum=1)
        check_int("recipe field epochs", self.epochs, minimum=1)
        check_int("recipe field steps", self.steps, minimum=0)
        check_number("recipe field eps", self.eps, minimum=0, maximum=1)
        check_number("recipe field step_size", self.step_size, minimum=0, maximum=1)
        if self.train_subset is not None:
            check_int("recipe field train_subset", self.train_subset, minimum=1)
        for name in ("include_clean", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"recipe field {name} must be true or false, got {getattr(self, name)!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ValueError(f"recipe field channels_last must be true, false or null, got {self.channels_last!r}")
        for m in self.milestones:
            check_int("recipe field milestones", m, minimum=1)
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def attack_spec(self):
        from .attacks import AttackSpec

        steps = 1 if self.attack == "fgsm_rs" else self.steps
        return AttackSpec(self.eps, self.step_size, steps, random_start=True)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def digest(self) -> str:
        """Short content hash of every field (provenance: which recipe made a checkpoint)."""
        return recipe_digest(self.as_dict())


def recipe_digest(recipe: dict) -> str:
    """`Recipe.digest` of a recipe's `as_dict()` (as stored in checkpoints)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


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
    # Embedded demo (mnist5k, a CPU): the CIFAR recipe made short. eps 0.15 (~38/255): at 8/255 an MNIST net is
    # already robust; fast adversarial training (FGSM-RS, step 1.25 eps) instead of PGD-7, a batch of 64 and a
    # higher learning rate so that a few hundred steps build robustness (config/config.yaml sizes the epochs).
    "mnist5k-demo": replace(_CIFAR, epochs=12, lr=4e-3, batch_size=64, eps=0.15, step_size=1.25 * 0.15, steps=1,
                            attack="fgsm_rs", include_clean=False),
}


if set(PRESETS) != set(RECIPES):  # the grid names the presets (config validation runs without torch)
    raise ImportError(f"recipe presets {sorted(PRESETS)} differ from advlayers.grid.vocabulary.RECIPES {sorted(RECIPES)}")


def get_recipe(name: str = "cifar10", **overrides) -> Recipe:
    check_choice("recipe", name, tuple(PRESETS))
    valid = {f.name for f in fields(Recipe)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown recipe field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------- precision


def bf16_native(device) -> bool:
    """Whether `device` computes bf16 natively: CUDA compute capability >= 8.0 (Ampere on), or a CPU whose
    oneDNN reports bf16 support (AVX-512 BF16 / AMX). Elsewhere bf16 autocast is emulated and slower than fp32
    (about 4x on an AVX2-only CPU)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(recipe: Recipe, device) -> tuple[str, bool]:
    """(precision, channels_last) a run actually uses. "auto" is bf16 only where the device computes it
    natively; the environment variable ADVLAYERS_PRECISION=fp32|bf16 forces what "auto" becomes (to measure
    the fp32 path on a bf16 machine). channels_last=None follows the precision (it paid off with bf16 only)."""
    precision = recipe.precision
    if precision == "auto":
        forced = os.environ.get(PRECISION_ENV)
        if forced:
            precision = check_choice(PRECISION_ENV, forced, ("fp32", "bf16"))
        else:
            precision = "bf16" if bf16_native(device) else "fp32"
    channels_last = recipe.channels_last if recipe.channels_last is not None else precision == "bf16"
    return precision, channels_last
