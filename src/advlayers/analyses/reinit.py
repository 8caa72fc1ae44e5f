"""Paper §5 analyses beyond retraining: the layer table (Fig. 5's x axis), the module-subset summary
(Fig. 6) and layer-wise re-initialisation robustness (Fig. 7, after Zhang, Bengio & Singer 2019, "Are all
layers created equal?").

Per-layer cut-offs and module subsets are grid cells (`advlayers.grid`) that `training.retrain` redraws and
trains; re-initialisation (`reinit_layer`) changes one layer of a trained net and retrains nothing. Its two
operations: **rewind** (the layer's epoch-0 values, the checkpoint pretraining saved) and **redraw** (a fresh
draw from the same initialisation distribution).
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.models import (
    MODULE_NAMES,
    Layer,
    ModularNet,
    build_model,
    layers,
    parameter_count,
)
from ..grid import vocabulary as vocab

# --------------------------------------------------------------------------- per-layer cut-off (Fig. 5)


def layer_table(model: ModularNet) -> list[dict]:
    """One row per layer in forward order: index, module (m0..m5), conv (or linear) name, bn name (None for a
    linear classifier layer) and n_params (layer + its BatchNorm); module boundaries are where `module` changes."""
    return [
        {
            "index": layer.index,
            "module": layer.module,
            "conv": layer.names[0],
            "torchvision_name": layer.torchvision_name,
            "bn": layer.names[1] if len(layer.names) > 1 else None,
            "n_params": parameter_count(model, list(layer.names)),
        }
        for layer in layers(model)
    ]


# --------------------------------------------------------------------------- module combinations (Fig. 6)


def subset_id(subset: Sequence[str]) -> str:
    """('m0', 'm2') -> '101000' (`vocab.module_mask`)."""
    return vocab.module_mask(subset)


def _as_mask(value) -> str:
    """A subset given as bitmask, 'm0,m2' / 'm0+m2' / 'm0 m2' string, '' / 'none', or a sequence of names.

    An integer is a bitmask whose leading zeros a CSV reader dropped ('001000' read as 1000)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = str(value).zfill(len(MODULE_NAMES))
    if isinstance(value, str):
        if re.fullmatch("[01]{%d}" % len(MODULE_NAMES), value):
            return value
        names = [n for n in re.split(r"[,+\s]+", value.strip()) if n and n != "none"]
        return subset_id(names)
    return subset_id(list(value))


def combination_summary(df: pd.DataFrame, by: Sequence[str] = (),
                        metrics: Sequence[str] = ("clean_acc", "robust_acc")) -> pd.DataFrame:
    """Paper Fig. 6: per module, the median and 25th/75th percentiles of each metric over the subsets that
    include it vs those that exclude it (the empty subset, i.e. the pretrained net, excludes every module).

    `df` has one row per retrained subset with a `subset` bitmask column (or `retrained_modules`: 'm0,m2',
    a tuple, ...) and the metric columns; `by` are further grouping columns (e.g. dataset, pretrain mode).
    Returns tidy rows: *by, module, membership ('included'/'excluded'), metric, median, q25, q75, n.
    """
    if "subset" in df:
        masks = df["subset"].map(_as_mask)
    elif "retrained_modules" in df:
        masks = df["retrained_modules"].map(_as_mask)
    else:
        raise ValueError("combination_summary needs a 'subset' (bitmask) or 'retrained_modules' column")
    missing = [c for c in (*by, *metrics) if c not in df]
    if missing:
        raise ValueError(f"combination_summary: missing column(s) {missing}")
    rows = []
    groups = df.groupby(list(by), sort=True) if by else [((), df)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        group_masks = masks.loc[group.index]
        for i, module in enumerate(MODULE_NAMES):
            included = group_masks.str[i] == "1"
            for membership, selected in (("included", group[included]), ("excluded", group[~included])):
                for metric in metrics:
                    values = selected[metric].astype(float)
                    rows.append({
                        **dict(zip(by, key)), "module": module, "membership": membership, "metric": metric,
                        "median": values.median(), "q25": values.quantile(0.25), "q75": values.quantile(0.75),
                        "n": int(values.count()),
                    })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- re-initialisation (Fig. 7)

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
    return build_model(spec.arch, spec.num_classes, spec.image_size, seed=seed, width=spec.width).state_dict()


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
