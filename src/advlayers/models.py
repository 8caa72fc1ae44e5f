"""torchvision VGG / ResNet rebuilt as six sequential modules m0..m5, cut at the downsampling layers.

A model is a `ModularNet`: an `nn.Sequential` whose six children are named ``m0`` .. ``m5``, so
``model(x) == m5(m4(m3(m2(m1(m0(x))))))`` by construction and every parameter/buffer belongs to exactly one
module. Inputs are images in [0, 1]; the input normalisation is the first layer of m0, so attacks and eps
live in pixel space.

Module mapping (paper §3, Fig. 1):

=====  ==========================================  =============================================
       ResNet-18 / ResNet-50                       VGG-11-BN / VGG-16-BN
=====  ==========================================  =============================================
m0     normalize, conv1 (stride 2), bn1, relu      normalize, conv block 1 (..., max-pool 1)
m1     maxpool, layer1                             conv block 2 (..., max-pool 2)
m2     layer2 (first block strides by 2)           conv block 3 (..., max-pool 3)
m3     layer3                                      conv block 4 (..., max-pool 4)
m4     layer4                                      conv block 5 (..., max-pool 5)
m5     global average pool, flatten, fc            global average pool, flatten, classifier
=====  ==========================================  =============================================

VGG's 7x7 adaptive average pool is replaced by global average pooling and the classifier's first Linear
takes 512 inputs instead of 512*7*7 (paper §3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._torchvision import torchvision

ARCHS = ("resnet18", "resnet50", "vgg11_bn", "vgg16_bn")
NUM_MODULES = 6
MODULE_NAMES = tuple(f"m{i}" for i in range(NUM_MODULES))

# ImageNet statistics: torchvision's convention, used for every dataset so that a model's input is
# always [0,1] pixels (dataset-specific statistics would only shift the first BatchNorm).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    num_classes: int
    image_size: int

    def as_dict(self) -> dict:
        return {"arch": self.arch, "num_classes": self.num_classes, "image_size": self.image_size}


class ModularNet(nn.Sequential):
    """Six named modules m0..m5 applied in order; `spec` says how to rebuild (and re-initialise) it."""

    def __init__(self, modules: list[nn.Module], spec: ModelSpec):
        if len(modules) != NUM_MODULES:
            raise ValueError(f"a ModularNet needs {NUM_MODULES} modules, got {len(modules)}")
        super().__init__()
        for name, module in zip(MODULE_NAMES, modules):
            self.add_module(name, module)
        self.spec = spec


def _resnet_modules(arch: str, num_classes: int) -> list[nn.Module]:
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    return [
        nn.Sequential(Normalize(), net.conv1, net.bn1, net.relu),
        nn.Sequential(net.maxpool, net.layer1),
        net.layer2,
        net.layer3,
        net.layer4,
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.fc),
    ]


def _vgg_modules(arch: str, num_classes: int) -> list[nn.Module]:
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    blocks, current = [], []
    for layer in net.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(current)
            current = []
    assert len(blocks) == 5 and not current, "torchvision VGG is expected to have five max-pooled blocks"
    classifier = net.classifier
    old = classifier[0]
    # Global average pooling leaves 512 features; re-create the first Linear with torchvision's VGG init.
    first = nn.Linear(512, old.out_features)
    nn.init.normal_(first.weight, 0, 0.01)
    nn.init.constant_(first.bias, 0)
    classifier[0] = first
    modules = [nn.Sequential(*b) for b in blocks]
    modules[0] = nn.Sequential(Normalize(), *blocks[0])
    modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), classifier))
    return modules


_BUILDERS = {
    "resnet18": _resnet_modules,
    "resnet50": _resnet_modules,
    "vgg11_bn": _vgg_modules,
    "vgg16_bn": _vgg_modules,
}


def register_arch(name: str, builder) -> None:
    """Add an architecture: `builder(name, num_classes) -> [m0, ..., m5]` (six nn.Modules applied in order,
    cut at the downsampling layers, m0 starting with `Normalize()`). Training, attacks, evaluation and the
    analyses then work on it by name (the workflow's config schema lists the four paper archs)."""
    if name in _BUILDERS:
        raise ValueError(f"arch {name!r} is already registered")
    _BUILDERS[name] = builder


def check_arch(arch: str) -> str:
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; valid choices: {', '.join(_BUILDERS)}")
    return arch


def build_model(arch: str, num_classes: int, image_size: int, seed: int | None = None) -> ModularNet:
    """A freshly initialised (torchvision's initialisation) six-module model.

    With `seed`, the initialisation is drawn from a private generator state so it does not depend on, and
    does not advance, the caller's global RNG.
    """
    check_arch(arch)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32 (five 2x downsamplings), got {image_size!r}")
    spec = ModelSpec(arch, num_classes, image_size)
    if seed is None:
        return ModularNet(_BUILDERS[arch](arch, num_classes), spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ModularNet(_BUILDERS[arch](arch, num_classes), spec)


def split_modules(model: ModularNet) -> list[nn.Module]:
    """The six modules m0..m5, in forward order."""
    return [getattr(model, name) for name in MODULE_NAMES]


def module_names_for_cutoff(cutoff: int, direction: str) -> list[str]:
    """Modules retrained for a cut-off: 'before' = m0..m{cutoff-1}, 'after' = m{cutoff}..m5.

    Cut-off 0 retrains nothing before it (the pretrained net) and everything after it; cut-off 6 the
    reverse. Valid cut-offs are 0..6.
    """
    if not isinstance(cutoff, int) or isinstance(cutoff, bool) or not 0 <= cutoff <= NUM_MODULES:
        raise ValueError(f"cut-off must be an integer in 0..{NUM_MODULES}, got {cutoff!r}")
    if direction == "before":
        return list(MODULE_NAMES[:cutoff])
    if direction == "after":
        return list(MODULE_NAMES[cutoff:])
    raise ValueError(f"unknown direction {direction!r}; valid choices: before, after")


@dataclass(frozen=True)
class Layer:
    """One conv/linear layer with the BatchNorm that directly follows it (None for the classifier)."""

    index: int
    module: str  # "m0".."m5"
    names: tuple[str, ...]  # qualified names inside the model: (conv, bn) or (linear,)

    @property
    def name(self) -> str:
        return self.names[0]


def layers(model: ModularNet) -> list[Layer]:
    """Every conv/linear layer in forward order, each paired with the BatchNorm that follows it.

    Order is definition order inside each module, which is forward order for VGG and for ResNet blocks
    (conv1, conv2[, conv3], downsample conv). Used for per-layer cut-offs and layer re-initialisation.
    """
    result: list[Layer] = []
    for module_name in MODULE_NAMES:
        pending: str | None = None
        for name, sub in getattr(model, module_name).named_modules(prefix=module_name):
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                if pending is not None:
                    result.append(Layer(len(result), module_name, (pending,)))
                pending = name
            elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
                if pending is None:
                    raise ValueError(f"BatchNorm {name} does not follow a conv/linear layer")
                result.append(Layer(len(result), module_name, (pending, name)))
                pending = None
        if pending is not None:
            result.append(Layer(len(result), module_name, (pending,)))
    return result


def parameter_count(model: nn.Module, names: list[str] | None = None) -> int:
    if names is None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters())
