"""AutoAttack (Croce & Hein, 2020) and APGD as evaluation attacks, from the reference implementation.

The attacks are Croce & Hein's own code, packaged as `pyautoattack` (the implementation RobustBench evaluates
with). `AutoAttackSpec` and `APGDSpec` follow the protocol `evaluation.evaluate` accepts besides
`attacks.AttackSpec`: a `name`, `as_dict()` and `robust_correct(model, x, y, generator=None) -> (clean, robust)`,
plus `robust_correct_by_attack` (the same, with the per-attack breakdown and the reference's checks). So::

    evaluate(model, dataset.test, AutoAttackSpec(8 / 255), n=1000)

gives the same record as a PGD evaluation, with attack "AutoAttack-standard", and in addition
`robust_acc_after` ({attack: robust accuracy after it and every attack before it}, in the order they ran) and
`checks` (the messages of the reference's checks for randomised, dynamic or probability-output models,
zero gradients and a Square attack that succeeds where the gradient attacks failed -- signs of gradient
masking). Each such message is also issued once as an `AutoAttackCheckWarning`.

Versions: "standard" (APGD-CE, APGD-T with 9 target classes, FAB-T, Square with 5000 queries), "plus",
"rand" (as the reference defines them) and "custom" (the `attacks` given, e.g. ("apgd-ce", "apgd-dlr"), with
the reference's default settings for each). The attacks run one after another on the samples still unbroken,
exactly as in the reference's `run_standard_evaluation`, one call per attack so that the accuracy after each
attack is known.

Conventions as in `advlayers.core.attacks`: inputs are images in [0, 1] (normalisation is the model's first layer,
so eps is in pixel units), the model runs in eval mode with its parameters frozen, the attack targets the true
label, and a sample misclassified clean counts as broken. The attack itself runs on the BatchNorm-folded copy
of the model (`attacks.folded_for_attack`, the same function up to float rounding, no BatchNorm passes); the
adversarial images are classified by the model itself. The reference seeds torch's global RNG from the spec's
`seed`; that happens inside `torch.random.fork_rng`, so the caller's RNG is left as it was (the `generator`
argument of the protocol is not used: the spec's seed fixes the attack).

Cost: standard AutoAttack takes minutes per hundred images for a small net on a CPU; `APGDSpec` (one APGD run,
CE or DLR loss) is the cheap variant. Progress (one line per attack) goes to this module's logger at INFO.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass

import torch

from ..checks import check_choice, check_int, check_number
from .attacks import attack_mode, check_images, folded_for_attack

VERSIONS = ("standard", "plus", "rand", "custom")  # the reference's versions
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")  # the reference's attacks (custom version)
NORMS = ("Linf", "L2")
APGD_LOSSES = ("ce", "dlr")
REFERENCE_LOGGER = "auto-attack"  # the logger pyautoattack reports its checks to

log = logging.getLogger(__name__)


class AutoAttackCheckWarning(UserWarning):
    """A check of the reference implementation failed: the evaluation may overstate robustness."""


def _check_eps(eps, norm: str) -> None:
    check_choice("norm", norm, NORMS)
    # an L-inf radius beyond 1 is the whole [0, 1] box; an L2 radius is bounded by sqrt(pixels) only
    check_number(f"eps (an {norm} radius in [0,1] pixel units, e.g. 8/255)", eps, minimum=0,
                 maximum=1 if norm == "Linf" else None)


def _rng_devices(x: torch.Tensor) -> list:
    return [x.device] if x.device.type == "cuda" else []


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def _reference_checks():
    """The reference's check messages (logged at WARNING to its logger) collected instead of printed."""
    logger = logging.getLogger(REFERENCE_LOGGER)
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def surface_checks(messages: list[str]) -> list[str]:
    """Issue each check message once as an `AutoAttackCheckWarning`; returns them."""
    for message in messages:
        warnings.warn(AutoAttackCheckWarning(f"AutoAttack check: {message}"), stacklevel=3)
    return messages


def _clean_only(model, x, y):
    check_images(x)
    with attack_mode(model, "eval"), torch.no_grad():
        clean = model(x.detach()).argmax(1) == y
    return clean, clean.clone()


def _run(model, x, y, attacks: tuple, perturb, fold_bn: bool):
    """(clean_correct, {attack: robust_correct after it}, check messages); `perturb(net, name, x, y, n_classes)`
    -> adversarial images of the samples given, by the reference attack `name`."""
    x, y = x.detach(), y.detach()
    check_images(x)
    with attack_mode(model, "eval"), _reference_checks() as messages:
        with torch.no_grad():
            logits = model(x)
        clean = logits.argmax(1) == y
        robust, after = clean.clone(), {}
        net = folded_for_attack(model) if fold_bn else model
        t0 = time.perf_counter()
        for name in attacks:
            idx = robust.nonzero().squeeze(1)
            if idx.numel():
                with torch.random.fork_rng(devices=_rng_devices(x)):
                    # the reference code views its gradients as (n, -1): contiguous images, whatever layout the
                    # evaluation runs the model in (eval.channels_last)
                    x_adv = perturb(net, name, x[idx].contiguous(), y[idx], logits.shape[1]).detach()
                with torch.no_grad():
                    robust[idx] = model(x_adv).argmax(1) == y[idx]
            after[name] = robust.clone()
            log.info("%s: %d of %d images still robust (%.1f s)", name, int(robust.sum()), len(y),
                     time.perf_counter() - t0)
        if "square" in after and len(after) > 1:
            _square_check(clean, after)
    return clean, after, messages


@dataclass(frozen=True)
class AutoAttackSpec:
    """AutoAttack with radius `eps`: the reference's "standard", "plus" or "rand" version, or "custom" with the
    reference attacks in `attacks` (see ATTACKS), run in that order.

    `n_classes`: the number of classes of the model (None: read from its logits); the targeted attacks use
    min(9, n_classes - 1) target classes."""

    eps: float
    version: str = "standard"
    norm: str = "Linf"
    n_classes: int | None = None
    seed: int = 0
    fold_bn: bool = True
    attacks: tuple | None = None

    def __post_init__(self):
        _check_eps(self.eps, self.norm)
        check_choice("AutoAttack version", self.version, VERSIONS)
        if self.n_classes is not None:
            check_int("n_classes", self.n_classes, minimum=2)
        check_int("seed", self.seed, minimum=0)
        if self.version == "custom":
            if not self.attacks or isinstance(self.attacks, str):
                raise ValueError(f"AutoAttack version 'custom' needs attacks, a list of {', '.join(ATTACKS)}")
            for a in self.attacks:
                check_choice("AutoAttack attack", a, ATTACKS)
            if len(set(self.attacks)) != len(self.attacks):
                raise ValueError(f"AutoAttack attacks {list(self.attacks)} name an attack twice")
            object.__setattr__(self, "attacks", tuple(self.attacks))
        elif self.attacks is not None:
            raise ValueError(f"AutoAttack attacks are chosen by version {self.version!r}; give attacks only with "
                             "version 'custom'")

    @property
    def name(self) -> str:
        version = f"custom[{'+'.join(self.attacks)}]" if self.version == "custom" else self.version
        return f"AutoAttack-{version}" + ("" if self.norm == "Linf" else f"-{self.norm}")

    def as_dict(self) -> dict:
        return {"eps": self.eps, "step_size": None, "steps": None, "restarts": 1, "random_start": False,
                "version": self.version, "norm": self.norm}

    def adversary(self, net, n_classes: int, device):
        """The reference `pyautoattack.AutoAttack` of this spec on `net`."""
        from pyautoattack import AutoAttack

        version = self.version
        adversary = AutoAttack(net, norm=self.norm, eps=self.eps, version=version, seed=self.seed, device=device,
                               attacks=list(self.attacks) if version == "custom" else None)
        targets = min(9, (self.n_classes or n_classes) - 1)
        adversary.apgd_targeted.n_target_classes = min(adversary.apgd_targeted.n_target_classes, targets)
        adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, targets)
        adversary.verbose = False
        return adversary

    def attack_names(self) -> tuple:
        """The attacks this spec runs, in order."""
        if self.version == "custom":
            return self.attacks
        from pyautoattack import AutoAttack

        with _reference_checks():  # its "setting parameters" message
            return tuple(AutoAttack(torch.nn.Identity(), version=self.version, norm=self.norm).attacks_to_run)

    def robust_correct_by_attack(self, model, x: torch.Tensor, y: torch.Tensor):
        """(clean_correct, {attack: robust_correct after it}, messages of the reference's checks)."""
        if self.eps == 0:
            clean, robust = _clean_only(model, x, y)
            return clean, {a: robust.clone() for a in self.attack_names()}, []
        adversaries = {}

        def perturb(net, name, xs, ys, n_classes):
            if id(net) not in adversaries:
                adversaries[id(net)] = self.adversary(net, n_classes, xs.device)
            adversary = adversaries[id(net)]
            adversary.attacks_to_run = [name]
            return adversary.run_standard_evaluation(xs, ys, batch_size=len(ys))[0]

        return _run(model, x, y, self.attack_names(), perturb, self.fold_bn)

    def robust_correct(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        clean, after, messages = self.robust_correct_by_attack(model, x, y)
        surface_checks(messages)
        return clean, list(after.values())[-1]


def _model_checks(net, x, y, logger) -> None:
    """The checks the reference runs before AutoAttack: randomised or dynamic model, probabilities as output."""
    from pyautoattack import checks

    checks.check_randomized(net, x, y, bs=len(y), logger=logger)
    checks.check_range_output(net, x, logger=logger)
    checks.check_dynamic(net, x, False, logger=logger)


def _square_check(clean, after: dict) -> None:
    """The reference's check that Square (black-box) did not break what the gradient attacks could not."""
    from pyautoattack import checks

    n = len(clean)
    accuracy = {"clean": float(clean.sum()) / n, **{a: float(r.sum()) / n for a, r in after.items()}}
    checks.check_square_sr(accuracy, logger=logging.getLogger(REFERENCE_LOGGER))


@dataclass(frozen=True)
class APGDSpec:
    """One APGD run of the reference (AutoAttack's first component with loss "ce"): `steps` iterations,
    `restarts` restarts, loss "ce" (cross-entropy) or "dlr" (difference of logits ratio)."""

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

    def robust_correct_by_attack(self, model, x: torch.Tensor, y: torch.Tensor):
        """(clean_correct, {"apgd-ce" or "apgd-dlr": robust_correct}, messages of the reference's checks)."""
        name = f"apgd-{self.loss}"
        if self.eps == 0:
            clean, robust = _clean_only(model, x, y)
            return clean, {name: robust}, []

        def perturb(net, _, xs, ys, n_classes):
            from pyautoattack.autopgd_base import APGDAttack

            if self.loss == "dlr" and n_classes < 3:
                raise ValueError(f"APGD with the DLR loss needs at least 3 classes, the model has {n_classes}")
            logger = logging.getLogger(REFERENCE_LOGGER)
            attack = APGDAttack(net, n_iter=self.steps, n_restarts=self.restarts, eps=self.eps, norm=self.norm,
                                loss=self.loss, seed=self.seed, rho=.75, eot_iter=1, device=xs.device, logger=logger)
            _model_checks(net, xs, ys, logger)
            return attack.perturb(xs, ys)

        return _run(model, x, y, (name,), perturb, self.fold_bn)

    def robust_correct(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        clean, after, messages = self.robust_correct_by_attack(model, x, y)
        surface_checks(messages)
        return clean, after[f"apgd-{self.loss}"]
