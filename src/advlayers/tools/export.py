"""A trained ResNet `ModularNet` as torchvision's own model: the same weights under torchvision's names.

    tv_model, state = to_torchvision(model)   # torchvision.models.resnet18(num_classes=...) with the weights
    tv_model(normalize(x)) == model(x)         # up to float rounding

Keys are remapped with `ModularNet.torchvision_names` ('m1.1.0.conv1' -> 'layer1.0.conv1'); the `Normalize`
buffers of m0 are dropped, so the torchvision model expects inputs normalised with the ImageNet mean and std
(`models.IMAGENET_MEAN`, `models.IMAGENET_STD`), as every torchvision classifier does, while the advlayers
net takes [0, 1] images.

Only width-1 ResNets are exportable: advlayers' VGG replaces torchvision's 7x7 adaptive pool by global average
pooling, so its classifier's first Linear takes 512 inputs instead of 512*7*7, and a narrowed net (width != 1)
has other channel counts than torchvision's fixed-width constructors build.
"""

from __future__ import annotations

from ..core.models import ModularNet, Normalize

EXPORTABLE = ("resnet18", "resnet50")


class ExportError(ValueError):
    """A model that has no torchvision counterpart."""


# What to do instead of exporting: the checkpoint is a plain torch module through advlayers itself.
INSTEAD = ("use the checkpoint as it is: `model, _ = advlayers.load_checkpoint(CKPT)` gives a torch nn.Module "
           "that takes [0, 1] images (`advlayers eval CKPT ...` evaluates it)")


def check_exportable(model: ModularNet) -> None:
    """Refuse (ExportError, saying what to do instead) a model with no torchvision counterpart."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError("only an advlayers ModularNet can be exported; save a plain torch model's state_dict "
                          "with torch.save(model.state_dict(), OUT) instead")
    if spec.arch.startswith("vgg"):
        raise ExportError(f"{spec.arch} cannot be exported to torchvision: advlayers' VGG uses global average "
                          "pooling, so the classifier's first Linear takes 512 inputs instead of torchvision's "
                          f"512*7*7; instead {INSTEAD}, or train a resnet18/resnet50 to export")
    if spec.arch not in EXPORTABLE:
        raise ExportError(f"{spec.arch} cannot be exported to torchvision (exportable: {', '.join(EXPORTABLE)}); "
                          f"instead {INSTEAD}")
    if spec.width != 1.0:
        raise ExportError(f"a width-{spec.width:g} {spec.arch} cannot be exported: torchvision's {spec.arch}() "
                          f"has fixed channel widths (width 1 only); instead {INSTEAD}, or train it with "
                          "width 1 (`advlayers pretrain --width 1`, or the config's `datasets.<name>.width: 1`) to "
                          "export it")


def torchvision_state_dict(model: ModularNet) -> dict:
    """`model.state_dict()` under torchvision's names, without the input normalisation's buffers."""
    check_exportable(model)
    names = model.torchvision_names
    state = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if isinstance(model.get_submodule(module), Normalize):
            continue
        if module not in names:
            raise ExportError(f"{key} has no torchvision name")
        state[f"{names[module]}.{leaf}"] = value.detach().cpu().clone()
    return state


def to_torchvision(model: ModularNet):
    """(torchvision model in eval mode holding `model`'s weights, its state_dict); loaded with strict=True."""
    from .._torchvision import torchvision

    state = torchvision_state_dict(model)
    spec = model.spec
    net = getattr(torchvision.models, spec.arch)(weights=None, num_classes=spec.num_classes)
    net.load_state_dict(state, strict=True)
    return net.eval(), state
