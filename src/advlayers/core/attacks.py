"""L-inf attacks in [0,1] pixel space: PGD (Madry et al.) and FGSM with random start (Wong et al.).

An attack only needs the input gradient: it is taken with `torch.autograd.grad(loss, x_adv)` while the
model's parameters have `requires_grad` switched off, so no weight gradient is computed and no `.grad`
is ever touched. BatchNorm layers that run on running statistics during the attack are folded into the
convolution before them (`folded_for_attack`, on a shallow copy of the model: the model itself is never
modified), which removes their forward and backward passes from every attack step; `fold_bn=False`
switches this off. The BatchNorm mode during the attack is explicit (`bn_mode`): "eval" uses running
statistics and changes nothing; "keep" leaves the model's modes as they are, so during training the trained
layers use batch statistics (and update their running statistics) as in Madry et al.'s reference code, while
frozen layers stay in eval mode.

Inputs must be images in [0, 1] (normalisation is the model's first layer) and eps an L-inf radius in pixel
units (<= 1); anything else is refused, since it would silently attack another threat model.

Two uses, two label conventions (paper §3.2):
* training attacks (`pgd`, `fgsm_rs`) are called with the model's *predicted* label (see
  `predicted_labels`) to avoid label leaking;
* evaluation (`robust_correct`) attacks the *true* label and counts a sample as broken if it is
  misclassified at any iterate, dropping broken samples from the batch as it goes.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..checks import check_choice, check_int, check_number
from ..grid.vocabulary import ARCHS
from .models import ModularNet, layers

BN_MODES = ("eval", "keep")


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

    @property
    def name(self) -> str:
        """What tables and figures call it: 'PGD-200', 'FGSM-RS', or 'clean' (no perturbation)."""
        if self.steps == 0 or self.eps == 0:
            return "clean"
        if self.steps == 1 and self.random_start:
            return "FGSM-RS"
        return f"PGD-{self.steps}"

    def robust_correct(self, model, x, y, *, generator=None, count: str = "any"):
        """Per-sample (clean_correct, robust_correct) under this attack on the true label (`robust_correct`)."""
        return robust_correct(model, x, y, self, count=count, generator=generator)


def check_attack_args(eps: float, step_size: float, steps: int, restarts: int = 1) -> None:
    check_number("eps (an L-inf radius in [0,1] pixel units, e.g. 8/255)", eps, minimum=0, maximum=1)
    check_number("step_size", step_size, minimum=0, maximum=1)
    check_int("steps", steps, minimum=0)
    check_int("restarts", restarts, minimum=1)


def check_images(x: torch.Tensor) -> None:
    """Attack inputs are images in [0, 1]: [0, 255] or normalised inputs would silently change the threat model."""
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"attack inputs must be images in [0, 1] (normalisation is inside the model), got values "
                         f"in [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def fgsm_rs_spec(eps: float, step_ratio: float = 1.25) -> AttackSpec:
    """Fast adversarial training's attack: uniform random start, one signed step of 1.25*eps."""
    return AttackSpec(eps=eps, step_size=step_ratio * eps, steps=1, random_start=True)


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn_mode: str = "eval"):
    """Parameters frozen (no weight gradients) and BatchNorm in the requested mode; restored on exit."""
    check_choice("bn_mode", bn_mode, BN_MODES)
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in grad_flags:
            p.requires_grad_(False)
        if bn_mode == "eval":
            model.eval()
        yield model
    finally:
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def _shallow_copy(module: nn.Module) -> nn.Module:
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    return clone


def _foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) names of the Conv2d -> BatchNorm2d pairs that can be folded in the model's current modes:
    a built-in ModularNet (its `layers` pairing is forward order), BN in eval mode with running statistics,
    no hooks."""
    if not isinstance(model, ModularNet) or getattr(model, "spec", None) is None or model.spec.arch not in ARCHS:
        # a torch.compile'd or DDP-wrapped net is left as it is; so is an arch added with `register_arch`,
        # whose definition order (which `layers` pairs by) need not be its forward order
        return []
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules()):
        return []
    pairs = []
    for layer in layers(model):
        if len(layer.names) != 2:
            continue
        conv, bn = model.get_submodule(layer.names[0]), model.get_submodule(layer.names[1])
        if (type(conv) is nn.Conv2d and isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training
                and bn.running_mean is not None and bn.running_var is not None):
            pairs.append(layer.names)
    return pairs


def folded_for_attack(model: nn.Module) -> nn.Module:
    """`model` with every eval-mode BatchNorm folded into the convolution before it (same function up to
    float rounding, ~1e-6 relative in fp32): a shallow copy sharing all other modules and tensors; the new
    conv weights are computed without autograd, so call it while the parameters are frozen (`attack_mode`).
    Returns `model` itself when nothing can be folded."""
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    clones = {"": _shallow_copy(model)}

    def clone(name: str) -> nn.Module:
        if name not in clones:
            parent, _, child = name.rpartition(".")
            copy_ = _shallow_copy(clone(parent)._modules[child])
            clones[parent]._modules[child] = copy_
            clones[name] = copy_
        return clones[name]

    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
            weight.requires_grad_(False)
            bias.requires_grad_(False)
            clone(conv_name)._parameters = {"weight": weight, "bias": bias}
            parent, _, child = bn_name.rpartition(".")
            clone(parent)._modules[child] = nn.Identity()
    return clones[""]


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


def _bounds(x, eps):
    """The box [max(x - eps, 0), min(x + eps, 1)]: the eps-ball projection and the [0,1] clamp in one."""
    return (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)


def _step(x_adv, grad, lo, hi, step_size):
    # In place on the attack's own iterate and gradient (never the caller's tensors); the same values as
    # min(max(x_adv + step * sign(grad), x - eps), x + eps).clamp(0, 1).
    return torch.clamp(x_adv.add_(grad.sign_(), alpha=step_size), lo, hi, out=x_adv)


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
    fold_bn: bool = True,
) -> torch.Tensor:
    """Adversarial examples (final iterate of the last restart) maximising the loss of label `y`."""
    x = x.detach()
    check_images(x)
    with attack_mode(model, bn_mode):
        net = folded_for_attack(model) if fold_bn and spec.steps else model
        x_adv = x
        lo, hi = _bounds(x, spec.eps)
        for _ in range(spec.restarts):
            x_adv = _start(x, spec.eps, spec.random_start, generator)
            for _ in range(spec.steps):
                grad, _ = _input_grad(net, x_adv, y, autocast)
                x_adv = _step(x_adv, grad, lo, hi, spec.step_size)
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
    fold_bn: bool = True,
) -> torch.Tensor:
    """L-inf PGD: optional uniform random start, `steps` signed-gradient steps, projection on the
    eps-ball around `x` and on [0,1]. With restarts > 1 the last restart's iterate is returned (for
    "worst over restarts" use `robust_correct`)."""
    spec = AttackSpec(eps, step_size, steps, random_start, restarts)
    return perturb(model, x, y, spec, bn_mode=bn_mode, generator=generator, autocast=autocast, fold_bn=fold_bn)


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
    fold_bn: bool = True,
) -> torch.Tensor:
    """FGSM with random start (fast adversarial training): one step of 1.25*eps by default."""
    spec = fgsm_rs_spec(eps) if step_size is None else AttackSpec(eps, step_size, 1, True)
    return perturb(model, x, y, spec, bn_mode=bn_mode, generator=generator, autocast=autocast, fold_bn=fold_bn)


@torch.no_grad()
def predicted_labels(model: nn.Module, x: torch.Tensor, *, bn_mode: str = "eval", autocast=None,
                     fold_bn: bool = True) -> torch.Tensor:
    """The model's predictions: the labels training attacks target (avoids label leaking)."""
    with attack_mode(model, bn_mode), torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
        return (folded_for_attack(model) if fold_bn else model)(x).argmax(1)


COUNTS = ("any", "final")


def robust_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    count: str = "any",
    generator: torch.Generator | None = None,
    fold_bn: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (clean_correct, robust_correct) under the attack on the true label, model in eval mode.

    count="any": a sample is broken as soon as any iterate (random start included) of any restart is
    misclassified; broken samples leave the batch at once, so the attack's cost shrinks with the
    accuracy. count="final": the textbook semantics -- only the final iterate of each restart is
    classified (all samples are attacked for all steps); robust = correct after every restart.
    Samples misclassified clean are never attacked and count as broken. Clean accuracy is the model's
    own; the attack's iterates are classified by the BatchNorm-folded copy (`folded_for_attack`).
    """
    check_choice("count", count, COUNTS)
    x, y = x.detach(), y.detach()
    check_images(x)
    with attack_mode(model, "eval"):
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        robust = clean.clone()
        if spec.eps == 0 or spec.steps == 0 and not spec.random_start:
            return clean, robust
        net = folded_for_attack(model) if fold_bn else model
        for _ in range(spec.restarts):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x0, y0 = x[idx], y[idx]
            # The random start is drawn for the whole batch so a sample's noise does not depend on
            # which other samples are still unbroken (makes "any" and "final" comparable sample-wise).
            x_adv = _start(x, spec.eps, spec.random_start, generator)[idx]
            lo, hi = _bounds(x0, spec.eps)
            for _ in range(spec.steps):
                grad, logits = _input_grad(net, x_adv, y0, None)
                if count == "any":
                    alive = logits.argmax(1) == y0
                    if not alive.all():
                        robust[idx[~alive]] = False
                        idx, y0, x_adv, grad = idx[alive], y0[alive], x_adv[alive], grad[alive]
                        lo, hi = lo[alive], hi[alive]
                        if idx.numel() == 0:
                            break
                x_adv = _step(x_adv, grad, lo, hi, spec.step_size)
            if idx.numel():
                with torch.no_grad():
                    robust[idx] &= net(x_adv).argmax(1) == y0
    return clean, robust
