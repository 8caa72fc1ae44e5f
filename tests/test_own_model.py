"""Your own model, your own dataset, published weights, by config alone (issue 21): automatic splits, `kind:
folder` datasets, published weights as the pretrained nets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from advlayers._torchvision import torchvision
from advlayers.core import models, published, splitting
from advlayers.grid import validate, vocabulary
from advlayers.grid.vocabulary import ConfigError

from helpers import copy_repo, dry_run, snakemake

DOC = (Path(__file__).parents[1] / "docs" / "own-model.md").read_text()
BUILDER = re.search(r"```python\n(.*?)```", DOC, re.S).group(1)  # mynets.py of docs/own-model.md
OWN_CONFIG = re.search(r"```yaml\n(.*?)```", DOC, re.S).group(1)  # its own.yaml


def _auto(name: str, source: str, **kw) -> str:
    splitting.register_source(splitting.ArchSource(name, source, **kw))
    return name


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "resnet50", "vgg16_bn"])
def test_automatic_split_agrees_with_the_checked_paper_splits(arch):
    auto = models.build_model(_auto(f"auto_{arch}", f"torchvision:{arch}"), 10, 224)
    ref = models.build_model(arch, 10, 224)
    labels = lambda m: [(layer.module, layer.label) for layer in models.layers(m)]  # noqa: E731
    assert labels(auto) == labels(ref)
    counts = [sum(layer.module == m for layer in models.layers(auto)) for m in vocabulary.MODULE_NAMES]
    assert tuple(counts) == vocabulary.MODULE_LAYERS[arch]


def test_unlisted_torchvision_arch_is_split_and_computes_the_same_function():
    torch.manual_seed(0)
    model = models.build_model(_auto("mnv3s", "torchvision:mobilenet_v3_small"), 3, 32, seed=0)
    counts = [sum(layer.module == m for layer in models.layers(model)) for m in vocabulary.MODULE_NAMES]
    assert counts == [1, 5, 6, 25, 15, 2]
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    out = model(x)
    for name in vocabulary.MODULE_NAMES:  # the modules chain: m5(...m0(x))
        x = getattr(model, name)(x)
    assert torch.equal(out, x) and out.shape == (2, 3)


def test_ambiguous_split_says_how_to_name_the_cuts():
    class Shallow(nn.Module):  # one halving, then a stride-4 layer that skips a resolution
        def __init__(self, num_classes=10, stride=4):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, stride, 1)
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.fc(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))

    with pytest.raises(ConfigError, match=r"archs\.NAME\.cuts"):
        splitting.split_net(Shallow(), nn.Identity(), 32)
    nodes = [n.name for n in splitting.describe_nodes(Shallow(), 32) if n.op not in ("placeholder", "output")]
    modules, _ = splitting.split_net(Shallow(), nn.Identity(), 32, cuts=tuple(nodes[1:6]))
    assert len(modules) == 6  # the cuts decide the module count: five cuts, six modules
    modules, _ = splitting.split_net(Shallow(stride=2), nn.Identity(), 32)  # two halvings: m0, m1 and the head
    assert len(modules) == 3


def test_user_builder_next_to_the_config(tmp_path):
    (tmp_path / "mynets.py").write_text(BUILDER)
    config = {"archs": {"mynet": {"source": "mynets:build", "module_layers": [1, 1, 1, 1, 1, 1]}}}
    splitting.register_config_archs(config, str(tmp_path))
    model = models.build_model("mynet", 3, 32, seed=0)
    assert [layer.label for layer in models.layers(model)][:2] == ["0", "3"]
    bad = {"archs": {"mynet2": {"source": "mynets:build", "module_layers": [1, 1, 1, 1, 2, 0]}}}
    splitting.register_config_archs(bad, str(tmp_path))
    with pytest.raises(ValueError, match=r"set it to \[1, 1, 1, 1, 1, 1\]"):
        models.build_model("mynet2", 3, 32)
    with pytest.raises(ConfigError, match="cannot import"):
        splitting.build_plain("nosuchmodule:build", 3, str(tmp_path))


# --------------------------------------------------------------------------- published weights


def _resnet_state(num_classes=3):
    torch.manual_seed(1)
    net = torchvision.models.resnet18(num_classes=num_classes)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    return net, net.state_dict()


@pytest.mark.parametrize("layout", ["torchvision", "robustbench", "madry"])
def test_published_state_dicts_load_into_the_modular_net(tmp_path, layout):
    net, state = _resnet_state()
    mean, std = torch.tensor(models.IMAGENET_MEAN), torch.tensor(models.IMAGENET_STD)
    if layout == "robustbench":
        state = {**{f"model.{k}": v for k, v in state.items()}, "normalize.mean": mean, "normalize.std": std}
    elif layout == "madry":
        state = {"model": {**{f"module.model.{k}": v for k, v in state.items()},
                           **{f"module.attacker.model.{k}": v for k, v in state.items()},
                           "module.normalizer.new_mean": mean[:, None, None], "module.normalizer.new_std": std[:, None, None]},
                 "epoch": 10}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    weights = published.load_published(str(path))
    assert weights.layout == layout
    published.check_normalisation(weights, None, None, "shapes3")
    model = models.build_model("resnet18", 3, 32)
    published.load_into(model, weights)
    x = torch.rand(2, 3, 32, 32)
    net.eval(), model.eval()
    expected = net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_mismatched_normalisation_and_shapes_are_refused(tmp_path):
    _, state = _resnet_state()
    path = tmp_path / "rb.pt"
    torch.save({f"model.{k}": v for k, v in state.items()}, path)  # RobustBench without a wrapper: raw [0, 1]
    weights = published.load_published(str(path))
    with pytest.raises(ConfigError, match=r"expect inputs normalised with mean \[0, 0, 0\].*datasets\.shapes3\.mean/std"):
        published.check_normalisation(weights, None, None, "shapes3")
    published.check_normalisation(weights, (0, 0, 0), (1, 1, 1), "shapes3")
    with pytest.raises(ConfigError, match="number of classes"):
        published.load_into(models.build_model("resnet18", 10, 32), weights)
    bad = tmp_path / "code.pt"
    torch.save({"x": torch.nn.Linear(2, 2)}, bad)  # a pickled module: never unpickled
    with pytest.raises(ConfigError, match="weights_only"):
        published.load_published(str(bad))


# --------------------------------------------------------------------------- the workflow


def write_folder(root: Path, per_class=(12, 6)) -> Path:
    from PIL import Image

    for split, n in zip(("train", "val"), per_class):
        for c, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                g = torch.Generator().manual_seed(100 * c + i)
                noise = torch.randint(0, 60, (32, 32, 3), generator=g) + torch.tensor(colour)
                Image.fromarray(noise.clamp(0, 255).to(torch.uint8).numpy()).save(folder / f"{i}.png")
    return root




def own_repo(tmp_path: Path) -> Path:
    """A fresh copy of the workflow with docs/own-model.md's own.yaml, mynets.py, images and weight files."""
    root = copy_repo(tmp_path / "repo")
    write_folder(root / "data" / "shapes3")
    (root / "mynets.py").write_text(BUILDER)
    _, state = _resnet_state()
    (root / "weights").mkdir()
    torch.save(state, root / "weights" / "resnet18_torchvision.pt")
    mean, std = torch.tensor(models.IMAGENET_MEAN), torch.tensor(models.IMAGENET_STD)
    torch.save({**{f"model.{k}": v for k, v in state.items()}, "normalize.mean": mean, "normalize.std": std},
               root / "weights" / "resnet18_robustbench.pt")
    (root / "own.yaml").write_text(OWN_CONFIG)
    return root


def test_config_checks_own_names_and_eval_n(tmp_path, monkeypatch):
    root = own_repo(tmp_path)
    monkeypatch.chdir(root)  # the config's paths are relative to the working directory, as in the workflow
    (root / "own.yaml").write_text(OWN_CONFIG.replace("n: null", "n: 19"))
    with pytest.raises(ConfigError, match=r"datasets\.shapes3\.eval\.n = 19 is above the test set size of shapes3 \(18"):
        validate.load(root / "own.yaml")
    (root / "own.yaml").write_text(OWN_CONFIG.replace("archs: [resnet18,", "archs: [resnet19,"))
    with pytest.raises(ConfigError, match=r"datasets\.shapes3\.archs = 'resnet19' is not valid"):
        validate.load(root / "own.yaml")
    tiny = Path(__file__).with_name("tiny.yaml").read_text().replace("n: 64", "n: 361")
    (root / "tiny361.yaml").write_text(tiny)
    with pytest.raises(ConfigError, match=r"datasets\.digits\.eval\.n = 361 is above the test set size of digits \(360"):
        validate.load(root / "tiny361.yaml")


def test_published_nets_are_imported_not_pretrained_in_a_dry_run(tmp_path):
    root = own_repo(tmp_path)
    jobs = dry_run(root, "all_figures", "--configfile", "own.yaml")
    imported = sorted(p for p in jobs["import_pretrained"] if p.endswith("pretrained.pt"))
    trained = sorted(p for p in jobs["pretrain"] if p.endswith("pretrained.pt"))
    assert len(imported) == 2 and all("/resnet18/" in p for p in imported)  # both pretrainings
    assert len(trained) == 4 and not any("/resnet18/" in p for p in trained)  # mnv3s and mynet


@pytest.mark.slow
def test_own_model_dataset_and_weights_run_all_figures(tmp_path):
    root = own_repo(tmp_path)
    snakemake(root, "all_figures", "--cores", "2", "--configfile", "own.yaml", timeout=1500)
    figures = sorted(p.name for p in (root / "results" / "figures").iterdir())
    assert any("shapes3" in f for f in figures), figures
    import pandas as pd

    table = pd.read_parquet(next((root / "results" / "tables").glob("cutoff*.parquet")))
    assert set(table["dataset"]) == {"shapes3"} and set(table["arch"]) == {"resnet18", "mnv3s", "mynet"}
    ckpt = torch.load(next((root / "results" / "checkpoints").glob("shapes3/resnet18/*/conventional/pretrained.pt")),
                      weights_only=True)
    assert ckpt["meta"]["published"]["source"] == "weights/resnet18_torchvision.pt" and len(ckpt["meta"]["published"]["sha256"]) == 64


def test_cost_drops_the_pretraining_of_published_nets():
    from advlayers.tools import cost

    config = validate.load(Path(__file__).parents[1] / "config" / "paper.yaml", roots=False)
    before = [j for j in cost.jobs(config) if j.rule == "pretrain"]
    config["datasets"]["imagenet"]["pretrained"] = {
        "resnet50": {"conventional": "torchvision:ResNet50_Weights.IMAGENET1K_V2", "adversarial": "madry_resnet50.pt"}}
    after = [j for j in cost.jobs(config) if j.rule == "pretrain"]
    dropped = [j for j in before if j not in after]
    assert {(j.dataset, j.arch) for j in dropped} == {("imagenet", "resnet50")}
    assert len(dropped) == 2 * len(config["seeds"])


@pytest.mark.slow
def test_the_api_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", (Path(__file__).parents[1] / "docs" / "api.md").read_text(), re.S).group(1)
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert "conventional: clean" in out and "m0-m1 retrained: clean" in out
    assert "layers per module: [1, 5, 6, 25, 15, 2]" in out
