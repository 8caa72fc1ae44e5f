"""Paper Fig. 7 only: layer-wise re-initialisation robustness (after Zhang, Bengio & Singer 2019, "Are all
layers created equal?").

`reinit_layer` changes one layer of a trained net and retrains nothing; `reinit_grid` yields the original net and
every layer re-initialised. Its two operations: **rewind** (the layer's epoch-0 values, the checkpoint
pretraining saved) and **redraw** (a fresh draw from the same initialisation distribution).
(Per-layer cut-offs, Fig. 5, and module subsets, Fig. 6, are grid cells (`advlayers.grid`) that
`core.training.retrain` trains; Fig. 6's summary is `report.figures.module_subsets.module_summary`.)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator

import torch

from ..core.models import Layer, ModularNet, build_model, layers
from ..grid import vocabulary as vocab

OPERATIONS = vocab.REINIT_OPERATIONS  # ("rewind", "redraw")
BN_POLICIES = vocab.BN_POLICIES
# BatchNorm buffers that `bn_policy="keep_stats"` leaves at their trained values.
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _resolve_layer(model: ModularNet, layer: int | str | Layer) -> Layer:
    all_layers = layers(model)
    if isinstance(layer, Layer):
        layer = layer.index
    if isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < len(all_layers):
        return all_layers[layer]
    for candidate in all_layers:
        if layer in candidate.names:
            return candidate
    raise ValueError(f"unknown layer {layer!r}: give an index in 0..{len(all_layers) - 1} or a conv/linear name "
                     f"such as {all_layers[1].name!r}")


def _layer_keys(model: ModularNet, layer: Layer, bn_policy: str) -> list[str]:
    """State-dict keys of a layer's tensors that re-initialisation replaces under `bn_policy`."""
    keys = []
    for name in layer.names:
        sub = model.get_submodule(name)
        is_bn = isinstance(sub, torch.nn.modules.batchnorm._BatchNorm)
        for tensor_name, _ in itertools.chain(sub.named_parameters(recurse=False), sub.named_buffers(recurse=False)):
            if is_bn and bn_policy == "keep_stats" and tensor_name in _BN_STATS:
                continue
            keys.append(f"{name}.{tensor_name}")
    return keys


def _replace_layer(model: ModularNet, layer: Layer, source: dict, bn_policy: str) -> ModularNet:
    new = copy.deepcopy(model)
    state = new.state_dict()  # tensors share storage with `new`: copy_ writes into the model in place
    with torch.no_grad():
        for key in _layer_keys(new, layer, bn_policy):
            if key not in source:
                raise KeyError(f"{key} missing from the source state dict (another architecture?)")
            state[key].copy_(source[key])
    return new.eval()


def _check_choices(operation: str, bn_policy: str) -> None:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; valid choices: {', '.join(OPERATIONS)}")
    if bn_policy not in BN_POLICIES:
        raise ValueError(f"unknown bn_policy {bn_policy!r}; valid choices: {', '.join(BN_POLICIES)}")


def _fresh_state(model: ModularNet, seed: int) -> dict:
    spec = model.spec
    return build_model(spec.arch, spec.num_classes, spec.image_size, seed=seed, width=spec.width, mean=spec.mean,
                       std=spec.std).state_dict()


def _check_fresh(fresh: dict, initial_state: dict | None, layer: Layer, seed: int) -> None:
    key = f"{layer.name}.weight"
    if initial_state is not None and torch.equal(fresh[key], initial_state[key].to("cpu")):
        raise ValueError(f"seed {seed} redraws the initial weights of {layer.name}: "
                         "redraw needs a seed other than the pretraining seed")


def reinit_layer(model: ModularNet, layer: int | str | Layer, *, initial_state: dict | None = None,
                 operation: str = "rewind", seed: int | None = None, bn_policy: str = "reset") -> ModularNet:
    """A deep copy of `model` in which only `layer` (index, conv/linear name or `Layer`) is re-initialised.

    operation="rewind": the layer's values at initialisation, taken from `initial_state` (the epoch-0 state
    dict: `build_model(arch, num_classes, image_size, seed=pretrain_seed, width=width).state_dict()`).
    operation="redraw": a fresh draw from the same initialisation distribution, `build_model(..., seed=seed)`;
    `seed` must differ from the pretraining seed (checked against `initial_state` when given).

    BatchNorm policy: bn_policy="reset" puts the layer's BatchNorm weight and bias *and* its running
    statistics (mean, var, batch counter) back to their initial values, so the whole layer is as at
    initialisation; bn_policy="keep_stats" resets the BatchNorm affine parameters but keeps the trained
    running statistics. (Both torchvision initialisations give BatchNorm weight 1, bias 0, mean 0, var 1,
    so "redraw" and "rewind" differ only in the conv/linear weights.) No retraining; the copy is in eval mode.
    """
    _check_choices(operation, bn_policy)
    target = _resolve_layer(model, layer)
    if operation == "rewind":
        if initial_state is None:
            raise ValueError("operation='rewind' needs initial_state, the epoch-0 state dict saved at pretraining")
        source = initial_state
    else:
        if seed is None:
            raise ValueError("operation='redraw' needs a seed for the fresh draw")
        source = _fresh_state(model, seed)
        _check_fresh(source, initial_state, target, seed)
    return _replace_layer(model, target, source, bn_policy)


def reinit_grid(model: ModularNet, initial_state: dict, seed: int, *,
                bn_policy: str = "reset") -> Iterator[tuple[Layer | None, str, ModularNet]]:
    """(layer, operation, model): the original net (None, 'none', model) followed by every layer rewound and
    redrawn (`reinit_layer`, one fresh draw from `seed` shared by all layers). Models are yielded one at a
    time, so only one copy is alive if the caller drops it."""
    yield None, "none", model.eval()
    fresh = _fresh_state(model, seed)
    all_layers = layers(model)
    _check_fresh(fresh, initial_state, all_layers[0], seed)
    for layer in all_layers:
        for operation, source in (("rewind", initial_state), ("redraw", fresh)):
            yield layer, operation, _replace_layer(model, layer, source, bn_policy)
