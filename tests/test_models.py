import functools

import pytest
import torch
from torch import nn

from advlayers.grid import vocabulary as vocab
from advlayers.grid.vocabulary import ARCHS
from advlayers._torchvision import torchvision
from advlayers.core.models import (
    MODULE_NAMES, Normalize, build_model, layers, module_names_for_cutoff, split_modules,
)

from helpers import WIDTH

RESNET18_NAMES = (
    ["conv1"]
    + [f"layer1.{b}.conv{c}" for b in (0, 1) for c in (1, 2)]
    + [name for i in (2, 3, 4) for name in (f"layer{i}.0.conv1", f"layer{i}.0.conv2", f"layer{i}.0.downsample.0",
                                              f"layer{i}.1.conv1", f"layer{i}.1.conv2")]
    + ["fc"]
)


@functools.lru_cache(maxsize=None)
def built(arch: str, width: float = 1.0):
    """One seed-0 net per (arch, width) for the whole module (the full-width VGGs take seconds to build)."""
    return build_model(arch, num_classes=10, image_size=32, seed=0, width=width).eval()


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return built(request.param)


@pytest.fixture(scope="module")
def narrow(model):
    """The same arch as `model`, a quarter as wide."""
    return built(model.spec.arch, WIDTH)


def test_every_tensor_in_exactly_one_module(model):
    owners = {}
    for name, module in zip(MODULE_NAMES, split_modules(model)):
        for t in list(module.parameters()) + list(module.buffers()):
            assert id(t) not in owners, f"tensor shared by {owners[id(t)]} and {name}"
            owners[id(t)] = name
    all_tensors = list(model.parameters()) + list(model.buffers())
    assert {id(t) for t in all_tensors} == set(owners)
    assert len(split_modules(model)) == 6


def test_modules_in_order_equal_forward(model, narrow):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for net in (model, narrow):
        h = x
        for m in split_modules(net):
            h = m(h)
        with torch.no_grad():
            assert torch.equal(h, net(x))
        assert h.shape == (2, 10)


def test_narrow_net_keeps_modules_and_layers(model, narrow):
    arch = model.spec.arch
    assert narrow.spec.arch == arch and narrow.spec.width == WIDTH and model.spec.width == 1.0
    assert [n for n, _ in narrow.named_children()] == list(MODULE_NAMES)
    wide_layers, narrow_layers = layers(model), layers(narrow)
    per_module = lambda ls: tuple(sum(layer.module == m for layer in ls) for m in MODULE_NAMES)  # noqa: E731
    assert per_module(narrow_layers) == per_module(wide_layers) == vocab.MODULE_LAYERS[arch]
    assert [layer.names for layer in narrow_layers] == [layer.names for layer in wide_layers]
    assert [layer.torchvision_name for layer in narrow_layers] == [layer.torchvision_name for layer in wide_layers]
    # every layer a quarter as wide (the classifier's output stays the number of classes)
    for wide, thin in zip(wide_layers[:-1], narrow_layers[:-1]):
        w, t = model.get_submodule(wide.name), narrow.get_submodule(thin.name)
        out = "out_channels" if isinstance(w, nn.Conv2d) else "out_features"
        assert getattr(t, out) == round(getattr(w, out) * WIDTH), wide.name
    assert narrow.get_submodule(narrow_layers[-1].name).out_features == 10
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in model.parameters()) / 8


def test_torchvision_names_of_resnet18():
    for width in (1.0, WIDTH):
        m = build_model("resnet18", 10, 32, width=width)
        ls = layers(m)
        assert [layer.torchvision_name for layer in ls] == RESNET18_NAMES
        assert [layer.label for layer in ls] == RESNET18_NAMES
        assert ls[7].names == ("m2.0.downsample.0", "m2.0.downsample.1") and ls[7].label == "layer2.0.downsample.0"
        assert m.torchvision_names["m1.1.0.bn1"] == "layer1.0.bn1" and m.torchvision_names["m0.2"] == "bn1"


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_torchvision_names_point_at_torchvision_tensors(arch):
    """A width-1 net built from seed s is torchvision's net built after manual_seed(s): every layer's weights sit
    under its torchvision name (VGG's first Linear is re-created for global average pooling)."""
    ours = built(arch)  # seed 0
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, arch)(weights=None, num_classes=10)
    for ours_name, tv_name in ours.torchvision_names.items():
        a, b = ours.get_submodule(ours_name), theirs.get_submodule(tv_name)
        assert type(a) is type(b), (ours_name, tv_name)
        if arch.startswith("vgg") and tv_name == "classifier.0":
            assert a.in_features == 512 and b.in_features == 512 * 7 * 7
            continue
        own = dict(b.named_parameters(recurse=False)) | dict(b.named_buffers(recurse=False))
        for key, value in [*a.named_parameters(recurse=False), *a.named_buffers(recurse=False)]:
            assert torch.equal(value, own[key]), f"{ours_name}.{key} vs {tv_name}.{key}"
    assert set(ours.torchvision_names.values()) >= {name for name, m in theirs.named_modules()
                                                    if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}


def test_modules_cut_at_downsampling(model):
    # Each of m0..m4 halves the resolution (the downsampling layers sit at the cuts); m5 is the head.
    h = torch.rand(1, 3, 64, 64)
    sizes = []
    for m in split_modules(model)[:5]:
        h = m(h)
        sizes.append(h.shape[-1])
    assert sizes == [32, 16, 8, 4, 2]


def test_normalisation_inside_model(model):
    assert isinstance(split_modules(model)[0][0], Normalize)


@pytest.mark.parametrize("arch", ["vgg11_bn", "vgg16_bn"])
@pytest.mark.parametrize("width, features", [(1.0, 512), (WIDTH, 128)])
def test_vgg_global_average_pool(arch, width, features):
    m = built(arch, width)
    head = split_modules(m)[5]
    assert isinstance(head[0], nn.AdaptiveAvgPool2d) and head[0].output_size == 1
    assert head[2][0].in_features == features and head[2][3].in_features == round(4096 * width)
    if width != 1.0:  # (full width: test_modules_cut_at_downsampling runs 64 px inputs)
        with torch.no_grad():
            assert m(torch.rand(2, 3, 64, 64)).shape == (2, 10)  # any input size: global pooling


def test_layers_pair_conv_with_bn(model):
    ls = layers(model)
    assert [l.index for l in ls] == list(range(len(ls)))
    named = dict(model.named_modules())
    for l in ls:
        if isinstance(named[l.names[0]], nn.Conv2d):  # every conv of these nets is followed by its BN
            assert isinstance(named[l.names[1]], nn.BatchNorm2d)
            assert named[l.names[1]].num_features == named[l.names[0]].out_channels
        else:
            assert isinstance(named[l.names[0]], nn.Linear) and len(l.names) == 1
    assert isinstance(named[ls[-1].names[0]], nn.Linear)
    # every conv/linear is listed once
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(l.names[0] for l in ls) == sorted(convs)
    assert ls[0].module == "m0" and ls[-1].module == "m5"


def test_layer_counts(narrow):
    assert len(layers(narrow)) == vocab.LAYER_COUNTS[narrow.spec.arch]
    assert vocab.LAYER_COUNTS["resnet18"] == 21 and vocab.LAYER_COUNTS["vgg16_bn"] == 16


@pytest.mark.parametrize("width", [0, -0.5, "0.5", True, 5])
def test_bad_width(width):
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18", 10, 32, width=width)


def test_seeded_build_is_deterministic_and_private():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("resnet18", 10, 32, seed=5, width=WIDTH)
    after = torch.rand(1)
    assert torch.equal(before, after), "seeded build must not advance the global RNG"
    b = build_model("resnet18", 10, 32, seed=5, width=WIDTH)
    c = build_model("resnet18", 10, 32, seed=6, width=WIDTH)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.m0[1].weight, c.m0[1].weight)


def test_cutoff_modules():
    assert module_names_for_cutoff(2, "before") == ["m0", "m1"]
    assert module_names_for_cutoff(2, "after") == ["m2", "m3", "m4", "m5"]
    assert module_names_for_cutoff(0, "before") == []
    assert module_names_for_cutoff(6, "before") == list(MODULE_NAMES)


@pytest.mark.parametrize("cutoff", [-1, 7, 2.5, True])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="0..6"):
        module_names_for_cutoff(cutoff, "before")


def test_bad_direction_and_arch():
    with pytest.raises(ValueError, match="before, after"):
        module_names_for_cutoff(1, "sideways")
    with pytest.raises(ValueError, match="resnet18, resnet50, vgg11_bn, vgg16_bn"):
        build_model("alexnet", 10, 32)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", 1, 32)


def test_register_own_arch():
    from advlayers.core import models

    def tiny(name, num_classes):
        block = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                                nn.ReLU(), nn.MaxPool2d(2))
        return [nn.Sequential(Normalize(), *block(3, 8)), block(8, 8), block(8, 8), block(8, 8), block(8, 8),
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, num_classes))]

    models.register_arch("tiny_test_net", tiny)
    try:
        m = build_model("tiny_test_net", 10, 32, seed=0)
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10) and len(layers(m)) == 6
        assert [layer.label for layer in layers(m)][:2] == ["m0.1", "m1.0"]  # no torchvision names: own names
        with pytest.raises(ValueError, match="already registered"):
            models.register_arch("tiny_test_net", tiny)
    finally:
        models._BUILDERS.pop("tiny_test_net")
