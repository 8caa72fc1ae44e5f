"""timm models as archs (issue 21: `timm:NAME` in the config, timm as the optional extra `advlayers[timm]`, which
CI installs: .ci/run). A timm model is split automatically, at the stages timm itself reports
(`feature_info.reduction()`), and `advlayers layers timm:NAME` prints the split. Built with pretrained=False:
nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlayers._torchvision import torchvision  # noqa: F401 (timm imports torchvision: through the guard first)
from advlayers.core import models, splitting
from advlayers.grid import validate
from advlayers.grid.vocabulary import ConfigError

timm = pytest.importorskip("timm", reason="the optional extra timm (pip install -c constraints.txt -e '.[timm]')")

SIZE = 64  # 64 px: five halvings still leave 2 x 2
RESNET18_LAYERS = [1, 4, 5, 5, 5, 1]  # what `advlayers layers timm:resnet18` prints (torchvision's ResNet-18 too)


def stage_outputs(name: str):
    """The split's module outputs and timm's feature stages of one freshly built timm net, on the same input."""
    net = splitting.build_plain(f"timm:{name}", 10).eval()
    info = timm.create_model(name, pretrained=False, features_only=True).feature_info
    captured = {}
    hooks = [net.get_submodule(m).register_forward_hook(lambda mod, i, out, m=m: captured.__setitem__(m, out))
             for m in info.module_name()]
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        net(x)
        for hook in hooks:
            hook.remove()
        modules, _ = splitting.split_net(net, nn.Identity(), SIZE)
        outputs, h = [], x
        for module in modules:
            h = module.eval()(h)
            outputs.append(h)
    return outputs, info, [captured[m] for m in info.module_name()]


@pytest.mark.parametrize("name", ["resnet18", "regnetx_002", "efficientnet_b0"])
def test_timm_split_agrees_with_its_feature_stages(name):
    """One module per timm stage plus the pooling head; module i ends at the resolution of stage i (reduction
    2, 4, 8, 16, 32). Where a stage opens with its strided layer (ResNet, RegNet) the modules end exactly at
    timm's stage outputs. An inverted-residual block (EfficientNet) expands its channels with a 1x1 conv at the
    old resolution before its strided depthwise conv: that expansion conv stays in the module before (a piece
    goes to the module of its output resolution), so each module begins at a `conv_dw`, inside timm's stage."""
    outputs, info, stages = stage_outputs(name)
    assert len(outputs) == len(info.reduction()) + 1 == 6
    for out, reduction in zip(outputs, info.reduction()):
        assert out.dim() == 4 and tuple(out.shape[2:]) == (SIZE // reduction,) * 2
    assert outputs[-1].shape == (2, 10)  # the pooling head: global pooling and the classifier
    if name != "efficientnet_b0":
        for out, stage in zip(outputs, stages):
            assert torch.equal(out, stage)
        return
    splitting.register_source(splitting.ArchSource("timm_effnet_b0", f"timm:{name}"))
    labels = {}
    for layer in models.layers(models.build_model("timm_effnet_b0", 10, SIZE)):
        labels.setdefault(layer.module, []).append(layer.label)
    assert [labels[f"m{i}"][0] for i in range(6)] == ["conv_stem", "blocks.1.0.conv_dw", "blocks.2.0.conv_dw",
                                                     "blocks.3.0.conv_dw", "blocks.5.0.conv_dw", "classifier"]
    assert all(labels[f"m{i}"][-1].endswith(".0.conv_pw") for i in range(4))  # the next block's expansion


def test_timm_arch_by_config_and_layers_command(tmp_path, capsys):
    from advlayers.tools import cli

    (tmp_path / "t.yaml").write_text(
        f'archs:\n  tr18: {{source: "timm:resnet18", module_layers: {RESNET18_LAYERS}}}\n'
        "datasets:\n  digits: {archs: [tr18], recipe: mnist5k-demo, eval: {eps: 0.1, step_size: 0.04, steps: 2}}\n"
        "cutoffs: {before: [2], after: [3]}\n")
    config = validate.load(tmp_path / "t.yaml", roots=False)
    splitting.register_config_archs(config, str(tmp_path))
    model = models.build_model("tr18", 10, SIZE, seed=0)
    assert [sum(layer.module == m for layer in models.layers(model)) for m in model.module_names] == RESNET18_LAYERS
    assert [layer.label for layer in models.layers(model)][:2] == ["conv1", "layer1.0.conv1"]
    assert cli.main(["layers", "timm:resnet18", "--image-size", str(SIZE)]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and f"(timm:resnet18, width 1, 10 classes); 6 modules, layers per module m0..m5: " \
        f"module_layers: {RESNET18_LAYERS}" in out
    assert cli.main(["layers", "tr18", "--config", str(tmp_path / "t.yaml"), "--image-size", str(SIZE)]) == 0
    assert f"module_layers: {RESNET18_LAYERS}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"source 'timm:nosuchnet': timm has no model 'nosuchnet'"):
        splitting.build_plain("timm:nosuchnet", 10)
