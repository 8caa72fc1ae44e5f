"""torchvision VGG / ResNet rebuilt as six sequential modules m0..m5, cut at the downsampling layers.

A model is a `ModularNet`: an `nn.Sequential` whose six children are named ``m0`` .. ``m5``, so
``model(x) == m5(m4(m3(m2(m1(m0(x))))))`` by construction and every parameter/buffer belongs to exactly one
module. (A config arch split by `core.splitting` has the N modules m0..m(N-1) of its own split.) Inputs are images in [0, 1]; the input normalisation is the first layer of m0, so attacks and eps
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

`width` scales every layer's channels (the classifier's hidden size too, for VGG) and keeps the blocks,
layers and modules: width 0.25 is a ResNet-18 with 16-32-64-128 channels and the same 21 layers, built from
torchvision's own ResNet/VGG classes. The paper config uses width 1 (torchvision's nets unchanged); the
embedded CPU demo uses a narrower net.

Every layer knows its torchvision name (`Layer.torchvision_name`: 'layer2.0.conv1', 'features.4'), for
figures and for `advlayers.tools.export`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from .._torchvision import torchvision
from ..checks import check_number
from ..grid.vocabulary import MIN_MODULES, MODULE_NAMES, NUM_MODULES, check_cutoff, module_names  # noqa: F401
from . import splitting

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
    width: float = 1.0
    mean: tuple = IMAGENET_MEAN  # the input normalisation (m0's first layer)
    std: tuple = IMAGENET_STD
    source: str = ""  # a config arch's source (`core.splitting`); "" for the built-in archs

    def as_dict(self) -> dict:
        out = {"arch": self.arch, "num_classes": self.num_classes, "image_size": self.image_size,
               "width": self.width}
        if (tuple(self.mean), tuple(self.std)) != (IMAGENET_MEAN, IMAGENET_STD):
            out.update(mean=list(self.mean), std=list(self.std))
        if self.source:
            out["source"] = self.source
        return out


class ModularNet(nn.Sequential):
    """N named modules m0..m(N-1) applied in order (N = 6 for the paper's archs, a config arch's split otherwise);
    `spec` says how to rebuild (and re-initialise) it; `torchvision_names` maps qualified module names
    ('m1.1.0.conv1') to torchvision's ('layer1.0.conv1')."""

    def __init__(self, modules: list[nn.Module], spec: ModelSpec, torchvision_names: dict[str, str] | None = None):
        if len(modules) < MIN_MODULES:
            raise ValueError(f"a ModularNet needs at least {MIN_MODULES} modules, got {len(modules)}")
        super().__init__()
        for name, module in zip(module_names(len(modules)), modules):
            self.add_module(name, module)
        self.spec = spec
        self.torchvision_names = dict(torchvision_names or {})

    @property
    def module_names(self) -> tuple[str, ...]:
        """('m0', ..., 'm(N-1)')."""
        return module_names(len(self))


def _init_like_torchvision(modules, linear_std: float | None) -> None:
    """torchvision's initialisation of ResNet (linear_std None: PyTorch's default Linear init) and VGG."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.constant_(m.bias, 0)


def _narrow_resnet(net, width: float, num_classes: int) -> None:
    """Rebuild conv1, layer1..4 and fc of a torchvision ResNet with `width` x its channels (same blocks)."""
    block = type(net.layer1[0])
    base = max(1, round(64 * width))
    net.inplanes = base
    net.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = net._norm_layer(base)
    for i in range(1, 5):
        old = getattr(net, f"layer{i}")
        setattr(net, f"layer{i}", net._make_layer(block, base * 2 ** (i - 1), len(old), stride=1 if i == 1 else 2))
    net.fc = nn.Linear(base * 8 * block.expansion, num_classes)
    _init_like_torchvision(net.modules(), linear_std=None)


def _resnet_modules(arch: str, num_classes: int, width: float = 1.0):
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if width != 1.0:
        _narrow_resnet(net, width, num_classes)
    return [
        nn.Sequential(Normalize(), net.conv1, net.bn1, net.relu),
        nn.Sequential(net.maxpool, net.layer1),
        net.layer2,
        net.layer3,
        net.layer4,
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.fc),
    ], net


class _NarrowVGG(nn.Module):
    """torchvision's VGG layout (features from `vgg.make_layers`, the same classifier) at `width`, without first
    building the full-width net (its 25088x4096 Linear alone takes seconds)."""

    def __init__(self, arch: str, num_classes: int, width: float):
        super().__init__()
        vgg = torchvision.models.vgg
        cfg = vgg.cfgs[{"vgg11_bn": "A", "vgg16_bn": "D"}[arch]]
        self.features = vgg.make_layers([v if v == "M" else max(1, round(v * width)) for v in cfg], batch_norm=True)
        hidden = max(1, round(4096 * width))
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, hidden),
                                        nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, num_classes))
        _init_like_torchvision(self.modules(), linear_std=0.01)


def _vgg_modules(arch: str, num_classes: int, width: float = 1.0):
    if width == 1.0:
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    else:
        net = _NarrowVGG(arch, num_classes, width)
    hidden = net.classifier[0].out_features
    channels = [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)][-1]
    blocks, current = [], []
    for layer in net.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(current)
            current = []
    assert len(blocks) == 5 and not current, "torchvision VGG is expected to have five max-pooled blocks"
    classifier = net.classifier
    # Global average pooling leaves `channels` (512 x width) features; re-create the first Linear with
    # torchvision's VGG init.
    first = nn.Linear(channels, hidden)
    nn.init.normal_(first.weight, 0, 0.01)
    nn.init.constant_(first.bias, 0)
    classifier[0] = first
    modules = [nn.Sequential(*b) for b in blocks]
    modules[0] = nn.Sequential(Normalize(), *blocks[0])
    modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), classifier))
    return modules, net


_BUILDERS = {
    "resnet18": _resnet_modules,
    "resnet50": _resnet_modules,
    "vgg11_bn": _vgg_modules,
    "vgg16_bn": _vgg_modules,
}


def register_arch(name: str, builder) -> None:
    """Add an architecture: `builder(name, num_classes) -> [m0, ..., m5]` (nn.Modules applied in order, six for
    the grid's vocabulary of a paper-like arch,
    cut at the downsampling layers, m0 starting with `Normalize()`; a builder taking `width=` gets the width
    multiplier). Training, attacks, evaluation and the analyses then work on it by name. For the workflow, name
    your arch in the config's `archs` section instead (`advlayers.core.splitting`: any nn.Module, split
    automatically; docs/own-model.md)."""
    if name in _BUILDERS:
        raise ValueError(f"arch {name!r} is already registered")
    _BUILDERS[name] = builder


def check_arch(arch: str) -> str:
    if arch not in _BUILDERS and splitting.source_of(arch) is None:
        raise ValueError(f"unknown arch {arch!r}; valid choices: {', '.join(_BUILDERS)} or an arch of the config's "
                         "`archs` section (advlayers.core.splitting.register_config_archs)")
    return arch


def _with_names(modules, net, spec: ModelSpec, names: dict | None = None) -> ModularNet:
    tv_name = names if names is not None else {id(m): name for name, m in net.named_modules() if name}
    model = ModularNet(modules, spec)
    model.torchvision_names = {name: tv_name[id(m)] for name, m in model.named_modules() if id(m) in tv_name}
    return model


def _build_split(arch: str, num_classes: int, spec: ModelSpec) -> ModularNet:
    source = splitting.source_of(arch)
    if spec.width != 1.0:
        raise ValueError(f"arch {arch!r} ({source.source}): width applies only to the built-in archs; leave it at 1")
    net = splitting.build_plain(source.source, num_classes, source.path)
    modules, names = splitting.split_net(net, Normalize(spec.mean, spec.std), spec.image_size, source.cuts)
    model = _with_names(modules, net, spec, names)
    counts = tuple(Counter(layer.module for layer in layers(model)).get(m, 0) for m in model.module_names)
    if source.module_layers is not None and counts != tuple(source.module_layers):
        raise ValueError(f"arch {arch!r}: the traced split has {list(counts)} layers in m0..m{len(counts) - 1}, the "
                         f"config says archs.{arch}.module_layers = {list(source.module_layers)}; set it to "
                         f"{list(counts)}")
    return model


def _build(arch: str, num_classes: int, spec: ModelSpec) -> ModularNet:
    if arch not in _BUILDERS:
        return _build_split(arch, num_classes, spec)
    builder = _BUILDERS[arch]
    if builder in (_resnet_modules, _vgg_modules):
        modules, net = builder(arch, num_classes, spec.width)
        modules[0][0].mean.copy_(torch.tensor(spec.mean).view(1, -1, 1, 1))
        modules[0][0].std.copy_(torch.tensor(spec.std).view(1, -1, 1, 1))
        return _with_names(modules, net, spec)
    if spec.width != 1.0:
        return ModularNet(builder(arch, num_classes, width=spec.width), spec)
    return ModularNet(builder(arch, num_classes), spec)


def build_model(arch: str, num_classes: int, image_size: int, seed: int | None = None,
                width: float = 1.0, mean=None, std=None) -> ModularNet:
    """A freshly initialised (torchvision's initialisation) modular model (six modules for the paper's archs),
    `width` x torchvision's channels.

    With `seed`, the initialisation is drawn from a private generator state so it does not depend on, and
    does not advance, the caller's global RNG.
    """
    check_arch(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32 (five 2x downsamplings), got {image_size!r}")
    width = check_number("width", width, minimum=0, maximum=4, strict=True)
    mean, std = _check_stats(mean, std)
    source = splitting.source_of(arch)
    spec = ModelSpec(arch, num_classes, image_size, width, mean, std, source.source if source else "")
    if seed is None:
        return _build(arch, num_classes, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(arch, num_classes, spec)


def _check_stats(mean, std) -> tuple[tuple, tuple]:
    mean = IMAGENET_MEAN if mean is None else tuple(float(v) for v in mean)
    std = IMAGENET_STD if std is None else tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std are 3 numbers each, std > 0; got mean={list(mean)}, std={list(std)}")
    return mean, std


def split_modules(model: ModularNet) -> list[nn.Module]:
    """The modules m0..m(N-1), in forward order."""
    return [getattr(model, name) for name in model.module_names]


def module_names_for_cutoff(cutoff: int, direction: str, n: int = NUM_MODULES) -> list[str]:
    """Modules of an n-module net retrained for a cut-off: 'before' = m0..m{cutoff-1}, 'after' = m{cutoff}..m(n-1).

    Cut-off 0 retrains nothing before it (the pretrained net) and everything after it; cut-off n the
    reverse. Valid cut-offs are 0..n (0..6 for the paper's archs).
    """
    check_cutoff(cutoff, n)  # a ConfigError (a ValueError) naming 0..n
    names = module_names(n)
    if direction == "before":
        return list(names[:cutoff])
    if direction == "after":
        return list(names[cutoff:])
    raise ValueError(f"unknown direction {direction!r}; valid choices: before, after")


@dataclass(frozen=True)
class Layer:
    """One conv/linear layer with the BatchNorm that directly follows it (None for the classifier)."""

    index: int
    module: str  # "m0".."m(N-1)"
    names: tuple[str, ...]  # qualified names inside the model: (conv, bn) or (linear,)
    torchvision_name: str = ""  # the conv/linear's name in the torchvision model ('layer2.0.conv1')

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def label(self) -> str:
        """What figures call the layer: torchvision's name where known."""
        return self.torchvision_name or self.name


def layers(model: ModularNet) -> list[Layer]:
    """Every conv/linear layer in forward order, each paired with the BatchNorm that follows it.

    Order is definition order inside each module, which is forward order for VGG and for ResNet blocks
    (conv1, conv2[, conv3], downsample conv). Used for per-layer cut-offs and layer re-initialisation.
    """
    result: list[Layer] = []
    tv = getattr(model, "torchvision_names", {})

    def add(module_name, names):
        result.append(Layer(len(result), module_name, tuple(names), tv.get(names[0], "")))

    for module_name in model.module_names:
        pending: str | None = None
        for name, sub in getattr(model, module_name).named_modules(prefix=module_name):
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                if pending is not None:
                    add(module_name, [pending])
                pending = name
            elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
                if pending is None:
                    raise ValueError(f"BatchNorm {name} does not follow a conv/linear layer")
                add(module_name, [pending, name])
                pending = None
        if pending is not None:
            add(module_name, [pending])
    return result


def parameter_count(model: nn.Module, names: list[str] | None = None) -> int:
    if names is None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters())
