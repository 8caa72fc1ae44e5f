"""Published weights as the pretrained nets: torchvision's weights enums and local state-dict files.

A source is ``torchvision:ResNet50_Weights.IMAGENET1K_V2`` (torchvision downloads it into its cache, on the
machine that runs the import job) or a file read with ``torch.load(weights_only=True)`` only. Files may be in
torchvision's key layout, RobustBench's (``model.*`` behind an optional ``normalize`` wrapper with ``mean``/``std``
buffers) or the Madry-lab robustness library's (``module.model.*``, ``module.normalizer.new_mean``/``new_std``,
``module.attacker.*`` dropped), optionally inside a ``{"state_dict": ...}`` or ``{"model": ...}`` dict. The
normalisation the weights expect (the enum's transforms, the file's wrapper buffers; torchvision-layout files:
ImageNet's; RobustBench files without a wrapper: none, i.e. mean 0, std 1) must equal the dataset's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..grid.vocabulary import ConfigError
from .models import IMAGENET_MEAN, IMAGENET_STD, ModularNet

TOLERANCE = 1e-3


@dataclass
class Published:
    state: dict  # torchvision key layout
    mean: tuple
    std: tuple
    layout: str  # torchvision | robustbench | madry
    source: str
    sha256: str


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _stats(state: dict, mean_key: str, std_key: str):
    return tuple(state[mean_key].flatten().tolist()), tuple(state[std_key].flatten().tolist())


def to_torchvision_layout(state: dict) -> tuple[dict, tuple | None, tuple | None, str]:
    """(state in torchvision keys, mean, std, layout name) of a loaded state dict."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], dict) and not torch.is_tensor(state[key]):
            state = state[key]
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    state = _strip(state, "module.")
    if any(k.startswith(("attacker.", "normalizer.")) for k in state):
        mean, std = _stats(state, "normalizer.new_mean", "normalizer.new_std")
        kept = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        return kept, mean, std, "madry"
    if state and all(k.startswith(("model.", "normalize.")) for k in state):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        for m, s in (("normalize.mean", "normalize.std"), ("normalize.mu", "normalize.sigma")):
            if m in state:
                mean, std = _stats(state, m, s)
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}, mean, std, "robustbench"
    return state, IMAGENET_MEAN, IMAGENET_STD, "torchvision"


def load_published(source: str) -> Published:
    """The weights a config's `pretrained` entry names, in torchvision's key layout."""
    from ..io import sha256_file, state_digest

    if source.startswith("torchvision:"):
        from .._torchvision import torchvision

        enum_name, _, member = source[len("torchvision:"):].partition(".")
        enum = getattr(torchvision.models, enum_name, None)
        weights = getattr(enum, member, None) if enum is not None else None
        if weights is None:
            raise ConfigError(f"pretrained weights {source!r}: torchvision.models has no {enum_name}.{member}")
        state = weights.get_state_dict(progress=False)
        transform = weights.transforms()
        return Published(state, tuple(transform.mean), tuple(transform.std), "torchvision", source,
                         state_digest(state))
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {source} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickles with code are refused by weights_only
        raise ConfigError(f"pretrained weights file {source} cannot be read with torch.load(weights_only=True) "
                          f"({type(e).__name__}); save a plain state dict") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"pretrained weights file {source} holds a {type(loaded).__name__}, not a state dict")
    state, mean, std, layout = to_torchvision_layout(loaded)
    return Published(state, mean, std, layout, str(source), sha256_file(path))


def check_normalisation(published: Published, mean, std, dataset: str) -> None:
    """One-line error unless the weights expect the dataset's input normalisation."""
    want_mean, want_std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    close = all(abs(a - b) <= TOLERANCE for a, b in zip((*published.mean, *published.std), (*want_mean, *want_std)))
    if not close or len(published.mean) != 3:
        raise ConfigError(f"pretrained weights {published.source} expect inputs normalised with mean "
                          f"{_fmt(published.mean)} and std {_fmt(published.std)} ({published.layout} layout), but dataset "
                          f"{dataset} normalises with mean {_fmt(want_mean)} and std {_fmt(want_std)}; set "
                          f"datasets.{dataset}.mean/std to the weights' values or use other weights")


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def load_into(model: ModularNet, published: Published) -> None:
    """Copy the published weights into `model` (every parameter and buffer but the input normalisation)."""
    target = model.state_dict()
    mapping = {}
    for name, tv in model.torchvision_names.items():
        module = model.get_submodule(name)
        for local, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            mapping[f"{name}.{local}"] = f"{tv}.{local}"
    missing = [k for k in target if k not in mapping and not k.split(".")[-1] in ("mean", "std")]
    mapping = {k: tv for k, tv in mapping.items()
               if tv in published.state or not tv.endswith("num_batches_tracked")}  # absent: left at 0
    absent = sorted(tv for k, tv in mapping.items() if tv not in published.state)
    if missing or absent:
        raise ConfigError(f"pretrained weights {published.source} do not fit {model.spec.arch}: "
                          f"{len(absent) + len(missing)} tensors missing, e.g. {(absent + missing)[0]}")
    new = dict(target)
    for key, tv in mapping.items():
        value = published.state[tv]
        if value.shape != target[key].shape:
            raise ConfigError(f"pretrained weights {published.source}: {tv} has shape {tuple(value.shape)}, "
                              f"{model.spec.arch} for this dataset needs {tuple(target[key].shape)} (number of "
                              "classes or width differ; the built-in VGGs pool globally, so their first classifier "
                              "layer takes 512 x width inputs)")
        new[key] = value.to(target[key].dtype)
    model.load_state_dict(new, strict=True)
