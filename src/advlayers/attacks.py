"""L-inf attacks in [0,1] pixel space: PGD (Madry et al.) and FGSM with random start (Wong et al.).

An attack only needs the input gradient: it is taken with `torch.autograd.grad(loss, x_adv)` while the
model's parameters have `requires_grad` switched off, so no weight gradient is computed and no `.grad`
is ever touched. The BatchNorm mode during the attack is explicit (`bn_mode`): "eval" uses running
statistics and changes nothing; "train" uses batch statistics (as in Madry's recipe) and updates the
running statistics of layers in train mode; "keep" leaves the model's modes as they are.

Two uses, two label conventions (paper §3.2):
* training attacks (`pgd`, `fgsm_rs`) are called with the model's *predicted* label (see
  `predicted_labels`) to avoid label leaking;
* evaluation (`robust_correct`) attacks the *true* label and counts a sample as broken if it is
  misclassified at any iterate, dropping broken samples from the batch as it goes.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_MODES = ("eval", "train", "keep")


@dataclass(frozen=True)
class AttackSpec:
    """An L-inf attack's settings; `steps=1, step_size=1.25*eps` with random start is FGSM-RS."""

    eps: float
    step_size: float
    steps: int
    random_start: bool = True
    restarts: int = 1

    def __post_init__(self):
        check_attack_args(self.eps, self.step_size, self.steps, self.restarts)

    def as_dict(self) -> dict:
        return asdict(self)


def check_attack_args(eps: float, step_size: float, steps: int, restarts: int = 1) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 (an L-inf radius in [0,1] pixel units, e.g. 8/255), got {eps!r}")
    if not step_size >= 0:
        raise ValueError(f"step_size must be >= 0, got {step_size!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")


def fgsm_rs_spec(eps: float, step_ratio: float = 1.25) -> AttackSpec:
    """Fast adversarial training's attack: uniform random start, one signed step of 1.25*eps."""
    return AttackSpec(eps=eps, step_size=step_ratio * eps, steps=1, random_start=True)


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn_mode: str = "eval"):
    """Parameters frozen (no weight gradients) and BatchNorm in the requested mode; restored on exit."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; valid choices: {', '.join(BN_MODES)}")
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in grad_flags:
            p.requires_grad_(False)
        if bn_mode == "eval":
            model.eval()
        elif bn_mode == "train":
            # Only modules already in train mode switch to batch statistics: frozen BN stays in eval.
            pass
        yield model
    finally:
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def _random_uniform(like: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU from `generator` so results do not depend on the device's RNG.
    noise = torch.rand(like.shape, generator=generator, dtype=torch.float32)
    return ((noise * 2 - 1) * eps).to(like.device, like.dtype)


def _input_grad(model, x_adv, y, autocast: torch.dtype | None):
    x_adv.requires_grad_(True)
    with torch.autocast(x_adv.device.type, dtype=autocast, enabled=autocast is not None):
        logits = model(x_adv)
    loss = F.cross_entropy(logits.float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    x_adv.requires_grad_(False)
    return grad, logits.detach()


def _step(x_adv, grad, x, eps, step_size):
    x_adv = x_adv + step_size * grad.sign()
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    return x_adv.clamp_(0, 1)


def _start(x, eps, random_start, generator):
    if random_start and eps > 0:
        return (x + _random_uniform(x, eps, generator)).clamp_(0, 1)
    return x.clone()


def perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Adversarial examples (final iterate of the last restart) maximising the loss of label `y`."""
    x = x.detach()
    with attack_mode(model, bn_mode):
        x_adv = x
        for _ in range(spec.restarts):
            x_adv = _start(x, spec.eps, spec.random_start, generator)
            for _ in range(spec.steps):
                grad, _ = _input_grad(model, x_adv, y, autocast)
                x_adv = _step(x_adv, grad, x, spec.eps, spec.step_size)
    return x_adv.detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    restarts: int = 1,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """L-inf PGD: optional uniform random start, `steps` signed-gradient steps, projection on the
    eps-ball around `x` and on [0,1]. With restarts > 1 the last restart's iterate is returned (for
    "worst over restarts" use `robust_correct`)."""
    spec = AttackSpec(eps, step_size, steps, random_start, restarts)
    return perturb(model, x, y, spec, bn_mode=bn_mode, generator=generator, autocast=autocast)


def fgsm_rs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """FGSM with random start (fast adversarial training): one step of 1.25*eps by default."""
    spec = fgsm_rs_spec(eps) if step_size is None else AttackSpec(eps, step_size, 1, True)
    return perturb(model, x, y, spec, bn_mode=bn_mode, generator=generator, autocast=autocast)


@torch.no_grad()
def predicted_labels(model: nn.Module, x: torch.Tensor, *, bn_mode: str = "eval", autocast=None) -> torch.Tensor:
    """The model's predictions: the labels training attacks target (avoids label leaking)."""
    with attack_mode(model, bn_mode), torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
        return model(x).argmax(1)


COUNTS = ("any", "final")


def robust_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    count: str = "any",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (clean_correct, robust_correct) under the attack on the true label, model in eval mode.

    count="any": a sample is broken as soon as any iterate (random start included) of any restart is
    misclassified; broken samples leave the batch at once, so the attack's cost shrinks with the
    accuracy. count="final": the textbook semantics -- only the final iterate of each restart is
    classified (all samples are attacked for all steps); robust = correct after every restart.
    Samples misclassified clean are never attacked and count as broken.
    """
    if count not in COUNTS:
        raise ValueError(f"unknown count {count!r}; valid choices: {', '.join(COUNTS)}")
    x, y = x.detach(), y.detach()
    with attack_mode(model, "eval"):
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        robust = clean.clone()
        if spec.eps == 0 or spec.steps == 0 and not spec.random_start:
            return clean, robust
        for _ in range(spec.restarts):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x0, y0 = x[idx], y[idx]
            # The random start is drawn for the whole batch so a sample's noise does not depend on
            # which other samples are still unbroken (makes "any" and "final" comparable sample-wise).
            x_adv = _start(x, spec.eps, spec.random_start, generator)[idx]
            for _ in range(spec.steps):
                grad, logits = _input_grad(model, x_adv, y0, None)
                if count == "any":
                    alive = logits.argmax(1) == y0
                    if not alive.all():
                        robust[idx[~alive]] = False
                        idx, x0, y0, x_adv, grad = idx[alive], x0[alive], y0[alive], x_adv[alive], grad[alive]
                        if idx.numel() == 0:
                            break
                x_adv = _step(x_adv, grad, x0, spec.eps, spec.step_size)
            if idx.numel():
                with torch.no_grad():
                    robust[idx] &= model(x_adv).argmax(1) == y0
    return clean, robust
