"""AutoAttack (Croce & Hein, 2020) and APGD as evaluation attacks, through torchattacks.

`AutoAttackSpec` and `APGDSpec` follow the protocol `evaluation.evaluate` accepts besides `attacks.AttackSpec`:
a `name`, `as_dict()` and `robust_correct(model, x, y, generator=None) -> (clean, robust)`. So::

    evaluate(model, dataset.test, AutoAttackSpec(8 / 255), n=1000)

gives the same record as a PGD evaluation, with attack "AutoAttack-standard".

Conventions as in `advlayers.core.attacks`: inputs are images in [0, 1] (normalisation is the model's first layer,
so eps is in pixel units), the model runs in eval mode with its parameters frozen, the attack targets the true
label, and a sample misclassified clean counts as broken. The attack itself runs on the BatchNorm-folded copy
of the model (`attacks.folded_for_attack`, the same function up to float rounding, no BatchNorm passes); the
final adversarial images are classified by the model itself. torchattacks seeds torch's global RNG from the
spec's `seed`; that happens inside `torch.random.fork_rng`, so the caller's RNG is left as it was (the
`generator` argument of the protocol is not used: the spec's seed fixes the attack).

Cost: standard AutoAttack runs APGD-CE, then APGD-T (9 target classes), FAB-T and Square (5000 queries) on the
samples still unbroken -- minutes per hundred images for a small net on a CPU. `APGDSpec` (one APGD run, CE or
DLR loss) is the cheap variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_choice, check_int, check_number
from .attacks import attack_mode, check_images, folded_for_attack

VERSIONS = ("standard", "plus", "rand")  # torchattacks.AutoAttack's versions
NORMS = ("Linf", "L2")
APGD_LOSSES = ("ce", "dlr")


def _check_eps(eps, norm: str) -> None:
    check_choice("norm", norm, NORMS)
    # an L-inf radius beyond 1 is the whole [0, 1] box; an L2 radius is bounded by sqrt(pixels) only
    check_number(f"eps (an {norm} radius in [0,1] pixel units, e.g. 8/255)", eps, minimum=0,
                 maximum=1 if norm == "Linf" else None)


def _rng_devices(x: torch.Tensor) -> list:
    return [x.device] if x.device.type == "cuda" else []


def _run(model, x, y, build, fold_bn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean_correct, robust_correct) with `build(net, n_classes)` -> a torchattacks attack on `net`."""
    x, y = x.detach(), y.detach()
    check_images(x)
    with attack_mode(model, "eval"):
        with torch.no_grad():
            logits = model(x)
        clean = logits.argmax(1) == y
        robust = clean.clone()
        idx = clean.nonzero().squeeze(1)
        if idx.numel() == 0:
            return clean, robust
        net = folded_for_attack(model) if fold_bn else model
        attack = build(net, logits.shape[1])
        with torch.random.fork_rng(devices=_rng_devices(x)):
            x_adv = attack(x[idx], y[idx]).detach()
        with torch.no_grad():
            robust[idx] = model(x_adv).argmax(1) == y[idx]
    return clean, robust


@dataclass(frozen=True)
class AutoAttackSpec:
    """Standard AutoAttack (or torchattacks' "plus"/"rand" versions) with radius `eps`.

    `n_classes`: the number of classes of the model (None: read from its logits)."""

    eps: float
    version: str = "standard"
    norm: str = "Linf"
    n_classes: int | None = None
    seed: int = 0
    fold_bn: bool = True

    def __post_init__(self):
        _check_eps(self.eps, self.norm)
        check_choice("AutoAttack version", self.version, VERSIONS)
        if self.n_classes is not None:
            check_int("n_classes", self.n_classes, minimum=2)
        check_int("seed", self.seed, minimum=0)

    @property
    def name(self) -> str:
        return f"AutoAttack-{self.version}" + ("" if self.norm == "Linf" else f"-{self.norm}")

    def as_dict(self) -> dict:
        return {"eps": self.eps, "step_size": None, "steps": None, "restarts": 1, "random_start": False,
                "version": self.version, "norm": self.norm}

    def robust_correct(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        import torchattacks

        def build(net, classes):
            return torchattacks.AutoAttack(net, norm=self.norm, eps=self.eps, version=self.version,
                                           n_classes=self.n_classes or classes, seed=self.seed)

        if self.eps == 0:
            return _clean_only(model, x, y)
        return _run(model, x, y, build, self.fold_bn)


@dataclass(frozen=True)
class APGDSpec:
    """One APGD run (AutoAttack's first component with loss "ce"): `steps` iterations, `restarts` restarts."""

    eps: float
    steps: int = 100
    loss: str = "ce"
    restarts: int = 1
    norm: str = "Linf"
    seed: int = 0
    fold_bn: bool = True

    def __post_init__(self):
        _check_eps(self.eps, self.norm)
        check_int("steps", self.steps, minimum=1)
        check_int("restarts", self.restarts, minimum=1)
        check_choice("APGD loss", self.loss, APGD_LOSSES)
        check_int("seed", self.seed, minimum=0)

    @property
    def name(self) -> str:
        return f"APGD-{self.loss.upper()}-{self.steps}" + ("" if self.norm == "Linf" else f"-{self.norm}")

    def as_dict(self) -> dict:
        return {"eps": self.eps, "step_size": None, "steps": self.steps, "restarts": self.restarts,
                "random_start": True, "version": f"apgd-{self.loss}", "norm": self.norm}

    def robust_correct(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        import torchattacks

        def build(net, classes):
            return torchattacks.APGD(net, norm=self.norm, eps=self.eps, steps=self.steps, n_restarts=self.restarts,
                                     seed=self.seed, loss=self.loss)

        if self.eps == 0:
            return _clean_only(model, x, y)
        return _run(model, x, y, build, self.fold_bn)


def _clean_only(model, x, y):
    check_images(x)
    with attack_mode(model, "eval"), torch.no_grad():
        clean = model(x.detach()).argmax(1) == y
    return clean, clean.clone()
