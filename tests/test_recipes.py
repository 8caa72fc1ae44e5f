"""advlayers.recipes: the paper's presets, field validation, the digest, and the precision a run resolves to."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from advlayers.core import recipes
from advlayers.core import training
from advlayers.grid.vocabulary import Setting
from advlayers.jobs.retrain import retrain_cell
from advlayers.core.checkpoints import read_checkpoint
from advlayers.core.models import build_model
from advlayers.core.recipes import PRECISION_ENV, PRESETS, Recipe, bf16_native, get_recipe, recipe_digest, resolve_precision

from helpers import tiny_recipe


@pytest.fixture(autouse=True)
def no_forced_precision(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)


# --------------------------------------------------------------------------- presets


def test_paper_presets():
    cifar = get_recipe("cifar10")
    assert (cifar.optimizer, cifar.lr, cifar.batch_size, cifar.epochs, cifar.schedule) == ("adam", 1e-3, 128, 300, "cosine")
    assert (cifar.attack, cifar.eps, cifar.step_size, cifar.steps, cifar.include_clean) == ("pgd", 8 / 255, 2 / 255, 7, True)
    assert (cifar.attack_bn_mode, cifar.frozen_bn, cifar.precision, cifar.channels_last) == ("keep", "eval", "auto", None)
    assert cifar.compile is False and cifar.train_subset is None
    inet = get_recipe("imagenet")
    assert (inet.optimizer, inet.lr, inet.momentum, inet.batch_size, inet.weight_decay) == ("sgd", 0.256, 0.875, 256, 1e-4)
    assert inet.milestones == (30, 60, 90) and inet.attack == "fgsm_rs" and inet.eps == 4 / 255
    assert inet.attack_spec().step_size == pytest.approx(1.25 * 4 / 255) and inet.attack_spec().steps == 1
    assert not inet.include_clean and inet.attack_bn_mode == "keep"
    assert get_recipe("imagenette") == cifar
    assert get_recipe("cifar10", epochs=5).epochs == 5 and get_recipe("cifar10") == cifar  # presets not mutated
    demo = get_recipe("mnist5k-demo")
    assert (demo.attack, demo.eps, demo.include_clean, demo.batch_size) == ("fgsm_rs", 0.15, False, 64)
    assert get_recipe("cifar10", milestones=[2, 4]).milestones == (2, 4)  # lists from YAML become tuples


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name, overrides, match", [
    ("cifar100", {}, "unknown recipe 'cifar100'; valid choices: " + ", ".join(PRESETS)),
    ("cifar10", {"learning_rate": 0.1}, r"unknown recipe field\(s\) \['learning_rate'\]; valid fields: .*epochs"),
    ("cifar10", {"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; valid choices: adam, sgd"),
    ("cifar10", {"epochs": 1.5}, "recipe field epochs must be an integer, got 1.5"),
    ("cifar10", {"epochs": 0}, "recipe field epochs must be an integer >= 1, got 0"),
    ("cifar10", {"batch_size": "64"}, "recipe field batch_size must be an integer, got '64'"),
    ("cifar10", {"steps": True}, "recipe field steps must be an integer, got True"),
    ("cifar10", {"eps": "8/255"}, "recipe field eps must be a number, got '8/255'"),
    ("cifar10", {"eps": 5}, "recipe field eps must be <= 1, got 5"),
    ("cifar10", {"eps": -1.0}, "recipe field eps must be >= 0"),
    ("cifar10", {"lr": 0}, "recipe field lr must be > 0"),
    ("cifar10", {"lr": float("nan")}, "recipe field lr must be finite"),
    ("cifar10", {"precision": "fp16"}, "unknown precision 'fp16'; valid choices: auto, fp32, bf16"),
    ("cifar10", {"attack_bn_mode": "train"}, "unknown attack_bn_mode 'train'; valid choices: keep, eval"),
    ("cifar10", {"frozen_bn": "train"}, "unknown frozen_bn 'train'; valid choices: eval, adapt"),
    ("cifar10", {"include_clean": 1}, "recipe field include_clean must be true or false"),
    ("cifar10", {"channels_last": "yes"}, "recipe field channels_last must be true, false or null"),
    ("cifar10", {"train_subset": 0}, "recipe field train_subset must be an integer >= 1"),
    ("cifar10", {"milestones": (30, 0.5)}, "recipe field milestones must be an integer"),
])
def test_bad_recipes_are_one_line_errors_naming_the_field(name, overrides, match):
    with pytest.raises(ValueError, match=match) as err:
        get_recipe(name, **overrides)
    assert "\n" not in str(err.value)


def test_recipe_constructor_validates_too():
    with pytest.raises(ValueError, match="recipe field epochs"):
        Recipe(epochs=2.0)
    with pytest.raises(ValueError, match="recipe field eps"):
        dataclasses.replace(get_recipe("cifar10"), eps=2)


# --------------------------------------------------------------------------- digest


# A valid value different from the cifar10 preset's for every field.
CHANGED = {
    "optimizer": "sgd", "lr": 2e-3, "momentum": 0.8, "weight_decay": 5e-4, "batch_size": 64, "epochs": 299,
    "schedule": "step", "milestones": (10,), "gamma": 0.2, "attack": "fgsm_rs", "eps": 4 / 255,
    "step_size": 1 / 255, "steps": 10, "attack_bn_mode": "eval", "include_clean": False, "frozen_bn": "adapt",
    "precision": "fp32", "channels_last": False, "compile": True, "train_subset": 1000,
}


def test_digest_changes_with_every_field():
    base = get_recipe("cifar10")
    assert set(CHANGED) == {f.name for f in dataclasses.fields(Recipe)}, "a new Recipe field: add it to CHANGED"
    assert base.digest() == get_recipe("cifar10").digest() == recipe_digest(base.as_dict())
    assert len(base.digest()) == 12
    digests = {base.digest()}
    for name, value in CHANGED.items():
        assert getattr(base, name) != value, name
        changed = get_recipe("cifar10", **{name: value})
        assert changed.digest() != base.digest(), f"the digest ignores {name}"
        digests.add(changed.digest())
    assert len(digests) == len(CHANGED) + 1
    # a recipe stored in a checkpoint (as_dict, JSON-able) gives the same digest as the Recipe
    assert recipe_digest(get_recipe("cifar10", milestones=[3]).as_dict()) == get_recipe("cifar10", milestones=(3,)).digest()


# --------------------------------------------------------------------------- precision


def _cuda(monkeypatch, available: bool, capability=(8, 0)):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def _cpu_bf16(monkeypatch, supported: bool):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: supported)


@pytest.mark.parametrize("capability, native", [((8, 0), True), ((9, 0), True), ((8, 6), True), ((7, 5), False),
                                                ((6, 0), False)])
def test_bf16_native_on_cuda_follows_compute_capability(monkeypatch, capability, native):
    _cuda(monkeypatch, True, capability)
    assert bf16_native("cuda") is native and bf16_native(torch.device("cuda", 0)) is native
    auto = get_recipe("cifar10")
    assert resolve_precision(auto, "cuda") == (("bf16", True) if native else ("fp32", False))


def test_no_bf16_without_cuda_or_on_other_devices(monkeypatch):
    _cuda(monkeypatch, False)
    assert bf16_native("cuda") is False
    assert resolve_precision(get_recipe("cifar10"), "cuda") == ("fp32", False)
    assert bf16_native("meta") is False


@pytest.mark.parametrize("supported", [True, False])
def test_bf16_native_on_cpu_follows_onednn(monkeypatch, supported):
    _cpu_bf16(monkeypatch, supported)
    assert bf16_native("cpu") is supported
    assert resolve_precision(get_recipe("cifar10"), "cpu") == (("bf16", True) if supported else ("fp32", False))


@pytest.mark.parametrize("native", [True, False])
def test_explicit_precision_and_channels_last_are_respected(monkeypatch, native):
    monkeypatch.setattr(recipes, "bf16_native", lambda device: native)
    assert resolve_precision(get_recipe("cifar10", precision="fp32"), "cpu") == ("fp32", False)
    assert resolve_precision(get_recipe("cifar10", precision="bf16"), "cpu") == ("bf16", True)
    # channels_last None follows the precision; set, it is kept whatever the precision
    assert resolve_precision(get_recipe("cifar10", precision="bf16", channels_last=False), "cpu") == ("bf16", False)
    assert resolve_precision(get_recipe("cifar10", precision="fp32", channels_last=True), "cpu") == ("fp32", True)
    auto = "bf16" if native else "fp32"
    assert resolve_precision(get_recipe("cifar10", channels_last=True), "cpu") == (auto, True)
    assert resolve_precision(get_recipe("cifar10", channels_last=False), "cpu") == (auto, False)
    # the environment variable changes what "auto" becomes, never an explicit choice
    monkeypatch.setenv(PRECISION_ENV, "bf16" if native else "fp32")
    assert resolve_precision(get_recipe("cifar10", precision="fp32"), "cpu") == ("fp32", False)


def test_environment_forces_what_auto_resolves_to(monkeypatch):
    monkeypatch.setattr(recipes, "bf16_native", lambda device: True)
    auto = get_recipe("cifar10")
    assert resolve_precision(auto, "cuda") == ("bf16", True)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_precision(auto, "cuda") == ("fp32", False)
    assert resolve_precision(get_recipe("cifar10", precision="bf16"), "cuda") == ("bf16", True)
    monkeypatch.setattr(recipes, "bf16_native", lambda device: False)
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert resolve_precision(auto, "cpu") == ("bf16", True)
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=f"unknown {PRECISION_ENV} 'fp16'; valid choices: fp32, bf16"):
        resolve_precision(auto, "cpu")
    monkeypatch.setenv(PRECISION_ENV, "")  # empty = not set
    assert resolve_precision(auto, "cpu") == ("fp32", False)


def _tiny_fc_net():
    """A narrow resnet18 whose retraining of the classifier alone (cell m000001) is cheap."""
    return build_model("resnet18", 10, 32, seed=0, width=0.25)


@pytest.mark.parametrize("native", [True, False])
def test_resolved_precision_is_recorded_in_train_result(digits, monkeypatch, native):
    monkeypatch.setattr(recipes, "bf16_native", lambda device: native)
    recipe = tiny_recipe(precision="auto", train_subset=64, epochs=1)
    result = training.train(_tiny_fc_net(), digits.train, recipe, mode="conventional", seed=0, units=["m5"],
                            progress=False)
    assert (result.precision, result.channels_last) == (("bf16", True) if native else ("fp32", False))
    assert result.model.m0[1].weight.is_contiguous()  # channels_last is undone at the end


@pytest.mark.parametrize("native, forced, expected", [
    (True, None, "bf16"),
    (False, None, "fp32"),
    (True, "fp32", "fp32"),
])
def test_resolved_precision_is_recorded_in_the_cell_checkpoint(digits, tmp_path, monkeypatch, native, forced,
                                                               expected):
    monkeypatch.setattr(recipes, "bf16_native", lambda device: native)
    if forced:
        monkeypatch.setenv(PRECISION_ENV, forced)
    data = tmp_path / "data.pt"
    data.write_bytes(b"stand-in for the prepared data")
    overrides = {"epochs": 1, "batch_size": 64, "train_subset": 64, "precision": "auto"}
    out = tmp_path / "cell.pt"
    retrain_cell(_tiny_fc_net(), digits, "m000001", setting=Setting("digits", "resnet18", 0, "adversarial"),
                 recipe={"name": "mnist5k-demo", "overrides": overrides}, device="cpu", state_path=tmp_path / "state.pt",
                 out=out, inputs={"data": data})
    payload = read_checkpoint(out)
    meta = payload["meta"]
    assert meta["precision"] == expected and meta["channels_last"] is (expected == "bf16")
    assert payload["provenance"]["precision"] == expected
    assert payload["recipe"]["precision"] == "auto" and meta["recipe_overrides"] == overrides  # what was asked
    assert (meta["cell"], meta["units"], meta["retrained_modules"]) == ("m000001", ["m5"], ["m5"])
    assert (meta["pretraining"], meta["retraining"], payload["dataset"], payload["width"]) == (
        "adversarial", "conventional", "digits", 0.25)
