"""Paper §5 analyses: per-layer cut-offs (Fig. 5), module combinations (Fig. 6) and layer-wise
re-initialisation robustness (Fig. 7, after Zhang, Bengio & Singer 2019, "Are all layers created equal?").

Per-layer cut-offs and module subsets only say *which* units `training.retrain` re-initialises and trains;
re-initialisation (`reinit_layer`) changes one layer of a trained net and does not retrain anything.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .models import MODULE_NAMES, Layer, ModularNet, build_model, layers, parameter_count

# --------------------------------------------------------------------------- per-layer cut-off (Fig. 5)


def layer_table(model: ModularNet) -> list[dict]:
    """One row per layer in forward order: index, module (m0..m5), conv (or linear) name, bn name (None for a
    linear classifier layer) and n_params (layer + its BatchNorm); module boundaries are where `module` changes."""
    return [
        {
            "index": layer.index,
            "module": layer.module,
            "conv": layer.names[0],
            "bn": layer.names[1] if len(layer.names) > 1 else None,
            "n_params": parameter_count(model, list(layer.names)),
        }
        for layer in layers(model)
    ]


def layer_cutoff_units(model: ModularNet, cutoff: int, direction: str = "before") -> list[str]:
    """Qualified module names (each conv/linear followed by its BatchNorm) that a per-layer cut-off retrains:
    'before' = layers[0:cutoff], 'after' = layers[cutoff:]. Valid cut-offs are 0..len(layers(model)).

    Parameter-free modules (input normalisation, pooling) belong to no layer; they hold no trainable state."""
    all_layers = layers(model)
    if not isinstance(cutoff, int) or isinstance(cutoff, bool) or not 0 <= cutoff <= len(all_layers):
        raise ValueError(f"layer cut-off must be an integer in 0..{len(all_layers)} "
                         f"({model.spec.arch} has {len(all_layers)} layers), got {cutoff!r}")
    if direction == "before":
        chosen = all_layers[:cutoff]
    elif direction == "after":
        chosen = all_layers[cutoff:]
    else:
        raise ValueError(f"unknown direction {direction!r}; valid choices: before, after")
    return [name for layer in chosen for name in layer.names]


# --------------------------------------------------------------------------- module combinations (Fig. 6)


def module_subsets() -> list[tuple[str, ...]]:
    """All 2^6 = 64 subsets of m0..m5: by size, then lexicographically (() first, all six last)."""
    return [s for k in range(len(MODULE_NAMES) + 1) for s in itertools.combinations(MODULE_NAMES, k)]


def subset_id(subset: Sequence[str]) -> str:
    """A 6-character bitmask, character i = '1' iff m{i} is in the subset: ('m0', 'm2') -> '101000'."""
    unknown = sorted(set(subset) - set(MODULE_NAMES))
    if unknown:
        raise ValueError(f"unknown module(s) {unknown}; valid: {', '.join(MODULE_NAMES)}")
    return "".join("1" if m in subset else "0" for m in MODULE_NAMES)


def subset_from_id(mask: str) -> tuple[str, ...]:
    """Inverse of `subset_id`: '101000' -> ('m0', 'm2')."""
    if not isinstance(mask, str) or not re.fullmatch(f"[01]{{{len(MODULE_NAMES)}}}", mask):
        raise ValueError(f"a module subset id is {len(MODULE_NAMES)} characters of 0/1 (e.g. '101000'), got {mask!r}")
    return tuple(m for m, bit in zip(MODULE_NAMES, mask) if bit == "1")


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

REINIT_HOWS = ("reinit", "rerandomize")
BN_POLICIES = ("reset", "keep_stats")
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


def _check_choices(how: str, bn_policy: str) -> None:
    if how not in REINIT_HOWS:
        raise ValueError(f"unknown how {how!r}; valid choices: {', '.join(REINIT_HOWS)}")
    if bn_policy not in BN_POLICIES:
        raise ValueError(f"unknown bn_policy {bn_policy!r}; valid choices: {', '.join(BN_POLICIES)}")


def _fresh_state(model: ModularNet, seed: int) -> dict:
    spec = model.spec
    return build_model(spec.arch, spec.num_classes, spec.image_size, seed=seed).state_dict()


def _check_fresh(fresh: dict, initial_state: dict | None, layer: Layer, seed: int) -> None:
    key = f"{layer.name}.weight"
    if initial_state is not None and torch.equal(fresh[key], initial_state[key].to("cpu")):
        raise ValueError(f"seed {seed} redraws the initial weights of {layer.name}: "
                         "re-randomisation needs a seed other than the pretraining seed")


def reinit_layer(model: ModularNet, layer: int | str | Layer, *, initial_state: dict | None = None,
                 how: str = "reinit", seed: int | None = None, bn_policy: str = "reset") -> ModularNet:
    """A deep copy of `model` in which only `layer` (index, conv/linear name or `Layer`) is re-initialised.

    how="reinit": the layer's values at initialisation, taken from `initial_state` (the epoch-0 state dict:
    `build_model(arch, num_classes, image_size, seed=pretrain_seed).state_dict()`).
    how="rerandomize": a fresh draw from the same initialisation distribution, `build_model(..., seed=seed)`;
    `seed` must differ from the pretraining seed (checked against `initial_state` when given).

    BatchNorm policy: bn_policy="reset" puts the layer's BatchNorm weight and bias *and* its running
    statistics (mean, var, batch counter) back to their initial values, so the whole layer is as at
    initialisation; bn_policy="keep_stats" resets the BatchNorm affine parameters but keeps the trained
    running statistics. (Both torchvision initialisations give BatchNorm weight 1, bias 0, mean 0, var 1,
    so "rerandomize" and "reinit" differ only in the conv/linear weights.) No retraining; the copy is in eval mode.
    """
    _check_choices(how, bn_policy)
    target = _resolve_layer(model, layer)
    if how == "reinit":
        if initial_state is None:
            raise ValueError("how='reinit' needs initial_state, the epoch-0 state dict saved at pretraining")
        source = initial_state
    else:
        if seed is None:
            raise ValueError("how='rerandomize' needs a seed for the fresh draw")
        source = _fresh_state(model, seed)
        _check_fresh(source, initial_state, target, seed)
    return _replace_layer(model, target, source, bn_policy)


def reinit_grid(model: ModularNet, initial_state: dict, seed: int, *,
                bn_policy: str = "reset") -> Iterator[tuple[int, str, str, ModularNet]]:
    """(layer_index, layer_name, how, model) for the original net (-1, 'none', 'none', model) followed by
    every layer re-initialised and re-randomised (`reinit_layer`, one fresh draw from `seed` shared by all
    layers). Models are yielded one at a time, so only one copy is alive if the caller drops it."""
    yield -1, "none", "none", model.eval()
    fresh = _fresh_state(model, seed)
    all_layers = layers(model)
    _check_fresh(fresh, initial_state, all_layers[0], seed)
    for layer in all_layers:
        for how, source in (("reinit", initial_state), ("rerandomize", fresh)):
            yield layer.index, layer.name, how, _replace_layer(model, layer, source, bn_policy)
