import pytest
import torch
from torch import nn

from advlayers.models import (
    ARCHS, MODULE_NAMES, Normalize, build_model, layers, module_names_for_cutoff, split_modules,
)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return build_model(request.param, num_classes=10, image_size=32, seed=0).eval()


def test_every_tensor_in_exactly_one_module(model):
    owners = {}
    for name, module in zip(MODULE_NAMES, split_modules(model)):
        for t in list(module.parameters()) + list(module.buffers()):
            assert id(t) not in owners, f"tensor shared by {owners[id(t)]} and {name}"
            owners[id(t)] = name
    all_tensors = list(model.parameters()) + list(model.buffers())
    assert {id(t) for t in all_tensors} == set(owners)
    assert len(split_modules(model)) == 6


def test_modules_in_order_equal_forward(model):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    h = x
    for m in split_modules(model):
        h = m(h)
    assert torch.equal(h, model(x))
    assert h.shape == (2, 10)


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


def test_vgg_global_average_pool():
    m = build_model("vgg11_bn", 10, 64)
    head = split_modules(m)[5]
    assert isinstance(head[0], nn.AdaptiveAvgPool2d) and head[0].output_size == 1
    assert head[2][0].in_features == 512


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


def test_layer_counts():
    assert len(layers(build_model("resnet18", 10, 32))) == 21
    assert len(layers(build_model("vgg16_bn", 10, 32))) == 16


def test_seeded_build_is_deterministic_and_private():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("resnet18", 10, 32, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after), "seeded build must not advance the global RNG"
    b = build_model("resnet18", 10, 32, seed=5)
    c = build_model("resnet18", 10, 32, seed=6)
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
    from advlayers import models

    def tiny(name, num_classes):
        block = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                                nn.ReLU(), nn.MaxPool2d(2))
        return [nn.Sequential(Normalize(), *block(3, 8)), block(8, 8), block(8, 8), block(8, 8), block(8, 8),
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, num_classes))]

    models.register_arch("tiny_test_net", tiny)
    try:
        m = build_model("tiny_test_net", 10, 32, seed=0)
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10) and len(layers(m)) == 6
        with pytest.raises(ValueError, match="already registered"):
            models.register_arch("tiny_test_net", tiny)
    finally:
        models._BUILDERS.pop("tiny_test_net")
