"""Paper §5 analyses: the layers and module subsets the grid retrains (Figs. 5, 6) and layer-wise
re-initialisation (Fig. 7: rewind to the epoch-0 values, redraw from the initial distribution). Narrow nets.
(Fig. 6's summary is tested in test_figures.py, beside its figure.)"""

import itertools

import pytest
import torch
from helpers import WIDTH

from advlayers.analyses.reinit import reinit_grid, reinit_layer
from advlayers.core.models import build_model, layers, parameter_count
from advlayers.grid import vocabulary as vocab

PRETRAIN_SEED = 0


def module_subsets():
    """The 64 module subsets as name tuples, () first."""
    return [vocab.mask_modules(mask) for mask in vocab.all_subsets()]


@pytest.fixture(scope="module")
def initial_state():
    return build_model("resnet18", 10, 32, seed=PRETRAIN_SEED, width=WIDTH).state_dict()


@pytest.fixture(scope="module")
def trained(initial_state):
    """Stands in for a pretrained net: every parameter and buffer moved away from its initial value."""
    model = build_model("resnet18", 10, 32, seed=PRETRAIN_SEED, width=WIDTH)
    model.load_state_dict(initial_state)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=g)).abs_()  # abs keeps running_var > 0
            else:
                tensor.add_(7)  # num_batches_tracked
    return model.eval()


def _same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


# --------------------------------------------------------------------------- layers (Figs. 5, 7)


def test_layers_mark_modules_and_partition_the_parameters(trained):
    """Each layer: its module, conv (or linear) and BatchNorm names and torchvision name; the layers' parameters
    (conv/linear + BatchNorm, `advlayers layers` lists them) add up to the net's."""
    all_layers = layers(trained)
    assert [layer.index for layer in all_layers] == list(range(21))
    spans = vocab.module_spans("resnet18")  # the module boundaries are the grid's
    assert [layer.module for layer in all_layers] == [f"m{m}" for m, span in enumerate(spans) for _ in span]
    assert all_layers[7].names == ("m2.0.downsample.0", "m2.0.downsample.1")
    assert all_layers[7].torchvision_name == "layer2.0.downsample.0" and all_layers[0].torchvision_name == "conv1"
    assert len(all_layers[-1].names) == 1 and all_layers[-1].torchvision_name == "fc"
    counts = [parameter_count(trained, list(layer.names)) for layer in all_layers]
    assert counts[0] == 16 * 3 * 7 * 7 + 2 * 16  # width 0.25: 16 stem channels
    assert counts[-1] == 128 * 10 + 10
    assert sum(counts) == parameter_count(trained)


# --------------------------------------------------------------------------- module subsets (Fig. 6)


def test_module_subsets_are_all_64_distinct():
    subsets = module_subsets()
    assert len(subsets) == 64 and len(set(subsets)) == 64
    assert {vocab.module_mask(s) for s in subsets} == {"".join(bits) for bits in itertools.product("01", repeat=6)}
    assert subsets[0] == () and ("m0", "m1", "m2", "m3", "m4", "m5") in subsets
    assert vocab.module_mask(("m0", "m2")) == "101000" == vocab.module_mask(("m2", "m0"))
    for s in subsets:
        assert vocab.mask_modules(vocab.module_mask(s)) == s
    for bad in ("10100", "10100x", 101000):
        with pytest.raises(ValueError):
            vocab.mask_modules(bad)
    with pytest.raises(ValueError):
        vocab.module_mask(("m6",))


# --------------------------------------------------------------------------- layer re-initialisation (Fig. 7)


def _layer_keys(state, layer):
    return {k for k in state if k.rsplit(".", 1)[0] in layer.names}


def test_rewind_sets_exactly_one_layer_back_to_its_epoch0_values(trained, initial_state):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    layer = layers(trained)[5]  # m2.0.conv1 + m2.0.bn1
    new = reinit_layer(trained, layer.index, initial_state=initial_state, operation="rewind")
    state = new.state_dict()
    layer_keys = _layer_keys(state, layer)
    assert layer_keys == {"m2.0.conv1.weight", "m2.0.bn1.weight", "m2.0.bn1.bias", "m2.0.bn1.running_mean",
                          "m2.0.bn1.running_var", "m2.0.bn1.num_batches_tracked"}
    assert _same(state, initial_state, layer_keys)
    assert _same(state, before, set(state) - layer_keys)
    assert not any(torch.equal(state[k], before[k]) for k in layer_keys)
    assert _same(trained.state_dict(), before, before)  # the input model is untouched
    assert not new.training
    # the default operation is rewind; the same layer by conv name, by BN name or as a Layer
    for ref in ("m2.0.conv1", "m2.0.bn1", layer):
        assert _same(reinit_layer(trained, ref, initial_state=initial_state).state_dict(), state, state)


def test_rewind_keep_stats_keeps_trained_running_statistics(trained, initial_state):
    new = reinit_layer(trained, 0, initial_state=initial_state, operation="rewind", bn_policy="keep_stats").state_dict()
    old = trained.state_dict()
    assert _same(new, initial_state, ["m0.1.weight", "m0.2.weight", "m0.2.bias"])
    assert _same(new, old, ["m0.2.running_mean", "m0.2.running_var", "m0.2.num_batches_tracked"])
    assert not torch.equal(new["m0.2.running_mean"], initial_state["m0.2.running_mean"])
    assert _same(new, old, [k for k in new if not k.startswith(("m0.1.", "m0.2."))])


def test_redraw_is_a_fresh_draw_from_the_same_law(trained, initial_state):
    redraw_seed = vocab.REDRAW_SEED_OFFSET + PRETRAIN_SEED
    fc = layers(trained)[-1]
    new = reinit_layer(trained, fc, initial_state=initial_state, operation="redraw", seed=redraw_seed).state_dict()
    old = trained.state_dict()
    for key in ("m5.2.weight", "m5.2.bias"):
        assert not torch.equal(new[key], old[key]) and not torch.equal(new[key], initial_state[key])
    assert float(new["m5.2.weight"].std()) == pytest.approx(float(initial_state["m5.2.weight"].std()), rel=0.15)
    assert _same(new, old, [k for k in new if not k.startswith("m5.2.")])
    fresh = build_model("resnet18", 10, 32, seed=redraw_seed, width=WIDTH).state_dict()
    assert _same(new, fresh, ["m5.2.weight", "m5.2.bias"])  # the draw of `seed`, at the net's width
    # a conv layer: redraw differs from the trained and the epoch-0 weights; BN reset to its initial values
    conv = reinit_layer(trained, 1, operation="redraw", seed=5).state_dict()
    rewound = reinit_layer(trained, 1, initial_state=initial_state, operation="rewind").state_dict()
    key = "m1.1.0.conv1.weight"
    assert not torch.equal(conv[key], initial_state[key]) and not torch.equal(conv[key], old[key])
    assert float(conv[key].std()) == pytest.approx(float(initial_state[key].std()), rel=0.15)  # same law
    for bn_key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(conv[f"m1.1.0.bn1.{bn_key}"], rewound[f"m1.1.0.bn1.{bn_key}"])  # reset: 1, 0, 0, 1, 0
    kept = reinit_layer(trained, 1, operation="redraw", seed=5, bn_policy="keep_stats").state_dict()
    assert torch.equal(kept[key], conv[key]) and torch.equal(kept["m1.1.0.bn1.running_var"], old["m1.1.0.bn1.running_var"])
    assert torch.equal(kept["m1.1.0.bn1.weight"], initial_state["m1.1.0.bn1.weight"])


def test_reinit_errors(trained, initial_state):
    with pytest.raises(ValueError, match="pretraining seed"):
        reinit_layer(trained, 1, initial_state=initial_state, operation="redraw", seed=PRETRAIN_SEED)
    with pytest.raises(ValueError, match="needs a seed"):
        reinit_layer(trained, 1, initial_state=initial_state, operation="redraw")
    with pytest.raises(ValueError, match="initial_state"):
        reinit_layer(trained, 1, operation="rewind")
    with pytest.raises(ValueError, match=r"unknown layer 21: give an index in 0..20"):
        reinit_layer(trained, 21, initial_state=initial_state)
    with pytest.raises(ValueError, match="unknown layer"):
        reinit_layer(trained, True, initial_state=initial_state)
    with pytest.raises(ValueError, match="bn_policy"):
        reinit_layer(trained, 1, initial_state=initial_state, bn_policy="zero")
    for old_name in ("reinit", "rerandomize"):
        with pytest.raises(ValueError, match="unknown operation .*valid choices: rewind, redraw"):
            reinit_layer(trained, 1, initial_state=initial_state, operation=old_name, seed=5)


@pytest.mark.parametrize("bn_policy", ["reset", "keep_stats"])
def test_reinit_grid_covers_every_layer_and_both_operations(trained, initial_state, bn_policy):
    redraw_seed = vocab.REDRAW_SEED_OFFSET
    models = reinit_grid(trained, initial_state, seed=redraw_seed, bn_policy=bn_policy)
    first = next(models)
    assert first[:2] == (None, "none") and first[2] is trained
    seen = []
    old = trained.state_dict()
    fresh = build_model("resnet18", 10, 32, seed=redraw_seed, width=WIDTH).state_dict()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    all_layers = layers(trained)
    for layer, operation, model in models:
        seen.append((layer.index, operation))
        state = model.state_dict()
        source = initial_state if operation == "rewind" else fresh
        keys = _layer_keys(state, layer)
        for key in keys:  # the layer's tensors from the source (trained statistics kept with keep_stats) ...
            kept = bn_policy == "keep_stats" and key.rsplit(".", 1)[1] in stats
            assert torch.equal(state[key], (old if kept else source)[key]), (layer.index, operation, key)
        assert _same(state, old, set(state) - keys), (layer.index, operation)  # ... and nothing else changed
        assert not torch.equal(state[f"{layer.name}.weight"], old[f"{layer.name}.weight"])
        assert not model.training
    assert len(seen) == 2 * len(all_layers) == 2 * vocab.LAYER_COUNTS["resnet18"]
    assert seen == [(i, op) for i in range(len(all_layers)) for op in ("rewind", "redraw")]
    with pytest.raises(ValueError, match="pretraining seed"):
        list(reinit_grid(trained, initial_state, seed=PRETRAIN_SEED))
