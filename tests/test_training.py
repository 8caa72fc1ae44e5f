import copy

import pytest
import torch

from advlayers.models import build_model, module_names_for_cutoff
from advlayers.training import (
    PRESETS, get_recipe, pretrain, reinitialize, retrain, set_train_modes, train,
)

from conftest import tiny_recipe


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def module_state(model, name):
    return {k: v.clone() for k, v in model.get_submodule(name).state_dict().items()}


def test_paper_presets():
    cifar = get_recipe("cifar10")
    assert (cifar.optimizer, cifar.lr, cifar.batch_size, cifar.epochs, cifar.schedule) == ("adam", 1e-3, 128, 300, "cosine")
    assert (cifar.attack, cifar.eps, cifar.step_size, cifar.steps, cifar.include_clean) == ("pgd", 8 / 255, 2 / 255, 7, True)
    inet = get_recipe("imagenet")
    assert (inet.optimizer, inet.lr, inet.momentum, inet.batch_size, inet.weight_decay) == ("sgd", 0.256, 0.875, 256, 1e-4)
    assert inet.milestones == (30, 60, 90) and inet.attack == "fgsm_rs" and inet.eps == 4 / 255
    assert inet.attack_spec().step_size == pytest.approx(1.25 * 4 / 255) and not inet.include_clean
    assert get_recipe("imagenette") == cifar
    assert get_recipe("cifar10", epochs=5).epochs == 5


@pytest.mark.parametrize("name, overrides, match", [
    ("cifar100", {}, "valid choices: " + ", ".join(PRESETS)),
    ("cifar10", {"learning_rate": 0.1}, "unknown recipe field"),
    ("cifar10", {"optimizer": "rmsprop"}, "adam, sgd"),
    ("cifar10", {"eps": -1.0}, "eps must be >= 0"),
    ("cifar10", {"epochs": 0}, "epochs must be > 0"),
])
def test_bad_recipes(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        get_recipe(name, **overrides)


def test_frozen_modes():
    model = build_model("resnet18", 10, 32)
    set_train_modes(model, ["m0", "m1"])
    assert all(m.training for m in model.m0.modules()) and all(m.training for m in model.m1.modules())
    assert not any(m.training for name in ("m2", "m3", "m4", "m5") for m in model.get_submodule(name).modules())


@pytest.mark.parametrize("mode, direction, cutoff", [
    ("adversarial", "before", 2),
    ("conventional", "after", 4),
])
def test_retrain_freezes_bit_for_bit(digits, mode, direction, cutoff):
    pretrained = build_model("resnet18", 10, 32, seed=0)
    # give the BN running statistics non-initial values, as in a trained net
    with torch.no_grad():
        pretrained.train()(torch.rand(16, 3, 32, 32))
    reference = copy.deepcopy(pretrained.state_dict())
    units = module_names_for_cutoff(cutoff, direction)
    frozen = [m for m in ("m0", "m1", "m2", "m3", "m4", "m5") if m not in units]
    result = retrain(pretrained, digits, tiny_recipe(), units=units, mode=mode, seed=3, progress=False)
    after = result.model.state_dict()
    for name in frozen:
        for k, v in pretrained.get_submodule(name).state_dict().items():
            assert torch.equal(after[f"{name}.{k}"], reference[f"{name}.{k}"]), f"frozen {name}.{k} changed"
    for name in units:
        changed = [k for k, v in pretrained.get_submodule(name).state_dict().items()
                   if not torch.equal(after[f"{name}.{k}"], reference[f"{name}.{k}"])]
        assert changed, f"re-initialised module {name} equals the pretrained one"
        params = [k for k, _ in pretrained.get_submodule(name).named_parameters()]
        assert set(params) <= set(changed)
    assert len(result.history) == 1 and result.history[0]["loss"] > 0


def test_reinitialize_resets_bn_and_draws_fresh_weights():
    model = build_model("resnet18", 10, 32, seed=0)
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 32, 32))
    before = module_state(model, "m2")
    reinitialize(model, ["m2"], seed=7)
    fresh = build_model("resnet18", 10, 32, seed=7)
    assert states_equal(module_state(model, "m2"), module_state(fresh, "m2"))
    assert not torch.equal(before["0.conv1.weight"], model.m2[0].conv1.weight)
    assert torch.equal(model.m2[0].bn1.running_var, torch.ones_like(model.m2[0].bn1.running_var))


def test_empty_retrain_is_the_pretrained_net(digits):
    model = build_model("resnet18", 10, 32, seed=0)
    ref = copy.deepcopy(model.state_dict())
    out = retrain(model, digits, tiny_recipe(), units=[], mode="adversarial", seed=0).model
    assert states_equal(out.state_dict(), ref)


def test_same_seed_bit_identical(digits):
    recipe = tiny_recipe(train_subset=128)
    a = pretrain("resnet18", digits, recipe, mode="adversarial", seed=11, progress=False).model
    b = pretrain("resnet18", digits, recipe, mode="adversarial", seed=11, progress=False).model
    c = pretrain("resnet18", digits, recipe, mode="adversarial", seed=12, progress=False).model
    assert states_equal(a.state_dict(), b.state_dict())
    assert not states_equal(a.state_dict(), c.state_dict())


def test_resume_equals_uninterrupted(digits, tmp_path):
    recipe = tiny_recipe(train_subset=128, epochs=2)
    full = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, progress=False).model
    state = tmp_path / "state.pt"

    class Interrupt(Exception):
        pass

    def stop_after_first(epoch, model):
        if epoch == 1:
            raise Interrupt

    model = build_model("resnet18", 10, 32, seed=4)
    torch.manual_seed(4)
    with pytest.raises(Interrupt):
        train(model, digits.train, recipe, mode="adversarial", seed=4, state_path=state, progress=False,
              on_epoch_end=stop_after_first)
    assert state.exists()
    torch.manual_seed(999)  # the resumed run must not depend on the caller's RNG
    resumed = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, state_path=state, progress=False)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    assert states_equal(resumed.model.state_dict(), full.state_dict())


def test_state_of_another_run_is_ignored(digits, tmp_path):
    state = tmp_path / "state.pt"
    pretrain("resnet18", digits, tiny_recipe(train_subset=64), mode="conventional", seed=1, state_path=state,
             progress=False)
    other = pretrain("resnet18", digits, tiny_recipe(train_subset=64), mode="adversarial", seed=1,
                     state_path=state, progress=False)
    assert other.resumed_from_epoch == 0


def test_bad_mode_and_units(digits):
    model = build_model("resnet18", 10, 32)
    with pytest.raises(ValueError, match="conventional, adversarial"):
        train(model, digits.train, tiny_recipe(), mode="robust", seed=0)
    with pytest.raises(ValueError, match="unknown module name"):
        retrain(model, digits, tiny_recipe(), units=["m9"], mode="adversarial", seed=0)


def test_compile_is_off_by_default_and_ignored_on_cpu(digits, caplog):
    from test_preemption import small_net

    assert get_recipe("cifar10").compile is False and get_recipe("imagenet").compile is False
    recipe = tiny_recipe(train_subset=128, epochs=2, steps=1)
    plain = train(small_net(), digits.train, recipe, mode="adversarial", seed=2, progress=False)
    with caplog.at_level("INFO", logger="advlayers.training"):
        compiled = train(small_net(), digits.train, get_recipe("mnist5k-demo", **{**recipe.as_dict(), "compile": True}),
                         mode="adversarial", seed=2, progress=False)
    assert "compile ignored on cpu" in caplog.text
    assert states_equal(plain.model.state_dict(), compiled.model.state_dict())
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in compiled.history]


def test_state_resumes_across_compile_flag(digits, tmp_path):
    """compile only changes how forward passes run: a state saved without it resumes with it."""
    from test_preemption import small_net

    recipe = tiny_recipe(train_subset=128, epochs=2)
    state = tmp_path / "state.pt"

    def stop(epoch, model):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_net(), digits.train, recipe, mode="conventional", seed=0, state_path=state, progress=False,
              on_epoch_end=stop)
    resumed = train(small_net(), digits.train, get_recipe("mnist5k-demo", **{**recipe.as_dict(), "compile": True}),
                    mode="conventional", seed=0, state_path=state, progress=False)
    assert resumed.resumed_from_epoch == 1
