"""advlayers.training: what is trained (cells, frozen means frozen), the protocol's training details (no clean
samples in adversarial pretraining, BatchNorm during training attacks, the frozen-BN ablation), seeds and
resumes. Narrow nets (width 0.25, the paper's layer structure) on small subsets of sklearn's digits."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from advlayers.grid import vocabulary as vocab
from advlayers.grid.vocabulary import Setting
from advlayers.jobs.retrain import retrain_cell
from advlayers.core import training
from advlayers.core.checkpoints import load_checkpoint
from advlayers.core.models import build_model, layers
from advlayers.core.recipes import get_recipe
from advlayers.core.resume import PREEMPT_SIGNALS, Preempted
from advlayers.core.training import (
    REDRAW_SEED_OFFSET, cell_units, check_units, pretrain, redraw, retrain, set_train_modes, train,
)

from helpers import WIDTH, tiny_recipe

BN = nn.modules.batchnorm._BatchNorm


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def clone_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def narrow(seed=0):
    return build_model("resnet18", 10, 32, seed=seed, width=WIDTH)


def pretrained_like(seed=0):
    """A narrow resnet18 whose BatchNorm running statistics are not their initial values, as in a trained net."""
    model = narrow(seed)
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def inside(key: str, units) -> bool:
    return any(key.startswith(u + ".") for u in units)


def spy_training_batches(model) -> list[int]:
    """Record the batch size of every training-step forward of `model` (grad on, some parameter trainable):
    attacks run with the parameters frozen and predicted labels without grad, so they are not recorded."""
    sizes: list[int] = []

    def hook(module, args):
        if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
            sizes.append(args[0].shape[0])

    model.register_forward_pre_hook(hook)
    return sizes


# --------------------------------------------------------------------------- what is trained


def test_cell_units_of_module_and_layer_cells():
    model = narrow()
    assert cell_units(model, "m110000") == ["m0", "m1"]
    assert cell_units(model, "m000001") == ["m5"]
    all_layers = layers(model)
    assert cell_units(model, "l0-7") == [n for layer in all_layers[:7] for n in layer.names]
    assert cell_units(model, "l7-8") == ["m2.0.downsample.0", "m2.0.downsample.1"]
    # Fig. 5's layer cut-off k ('before': the first k layers) is the cell of those layers, whatever its form
    for k in range(1, len(all_layers) + 1):
        cell = vocab.cell_of_layers("resnet18", range(k))
        units = check_units(model, cell_units(model, cell))  # retrain accepts them
        trained = {id(p) for u in units for p in model.get_submodule(u).parameters()}
        expected = {id(p) for layer in all_layers[:k] for n in layer.names for p in model.get_submodule(n).parameters()}
        assert trained == expected, (k, cell)
    for bad in ("m11000", "l0-22", "l5-5", "x01"):
        with pytest.raises(ValueError):
            cell_units(model, bad)


def test_frozen_modes():
    model = narrow()
    set_train_modes(model, ["m0", "m1"])
    assert all(m.training for m in model.m0.modules()) and all(m.training for m in model.m1.modules())
    assert not any(m.training for name in ("m2", "m3", "m4", "m5") for m in model.get_submodule(name).modules())
    units = cell_units(model, "l0-7")
    set_train_modes(model, units)
    for name, module in model.named_modules():
        if isinstance(module, BN):
            assert module.training == (name in units), name
    # the frozen-BN ablation: every BatchNorm follows the data, every other frozen module stays in eval
    set_train_modes(model, ["m5"], frozen_bn="adapt")
    assert all(m.training for m in model.modules() if isinstance(m, BN))
    assert not model.m3[0].conv1.training and model.m5.training
    set_train_modes(model, None)
    assert all(m.training for m in model.modules())


def test_redraw_resets_bn_and_draws_fresh_weights():
    model = pretrained_like()
    before = clone_state(model)
    redraw(model, ["m2"], seed=7)
    fresh = build_model("resnet18", 10, 32, seed=7, width=WIDTH)
    assert states_equal(model.m2.state_dict(), fresh.m2.state_dict())
    assert not torch.equal(before["m2.0.conv1.weight"], model.m2[0].conv1.weight)
    assert torch.equal(model.m2[0].bn1.running_var, torch.ones_like(model.m2[0].bn1.running_var))
    assert int(model.m2[0].bn1.num_batches_tracked) == 0
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("m2."))
    with pytest.raises(ValueError, match="unknown module name"):
        redraw(model, ["m7"], seed=1)


# --------------------------------------------------------------------------- frozen means frozen


@pytest.mark.parametrize("mode, cell", [
    ("adversarial", "m110000"),
    ("conventional", "m000011"),
    ("adversarial", "l0-7"),
    ("conventional", "l0-7"),
])
def test_retrain_cell_freezes_bit_for_bit(digits, tmp_path, monkeypatch, mode, cell):
    pretrained = pretrained_like()
    reference = clone_state(pretrained)
    seeds = []
    real_redraw = training.redraw
    monkeypatch.setattr(training, "redraw", lambda model, units, seed: seeds.append(seed) or real_redraw(model, units, seed))
    data = tmp_path / "data.pt"
    data.write_bytes(b"data")
    out, state = tmp_path / "cell.pt", tmp_path / "state.pt"
    overrides = {"epochs": 1, "batch_size": 64, "train_subset": 128, "eps": 0.1, "step_size": 0.04, "steps": 2,
                 "attack": "pgd", "precision": "fp32"}
    setting = Setting("digits", "resnet18", 3, "conventional" if mode == "adversarial" else "adversarial")
    payload = retrain_cell(pretrained, digits, cell, setting=setting,
                           recipe={"name": "mnist5k-demo", "overrides": overrides}, device="cpu", state_path=state,
                           out=out, inputs={"data": data})
    assert seeds == [REDRAW_SEED_OFFSET + 3]  # a fresh draw, not pretraining's stream
    assert states_equal(pretrained.state_dict(), reference), "retrain_cell changed the net it was given"
    assert state.exists(), "the resume state is kept until the caller removes it"
    units = payload["meta"]["units"]
    assert units == cell_units(pretrained, cell)
    assert payload["meta"]["retrained_modules"] == vocab.cell_modules("resnet18", cell)
    model, _ = load_checkpoint(out, arch="resnet18", expect={"cell": cell, "retraining": mode})
    after = model.state_dict()
    frozen = [k for k in after if not inside(k, units)]
    assert frozen and all(torch.equal(after[k], reference[k]) for k in frozen), \
        [k for k in frozen if not torch.equal(after[k], reference[k])]
    params = {f"{u}.{n}" for u in units for n, _ in pretrained.get_submodule(u).named_parameters()}
    assert params and all(not torch.equal(after[k], reference[k]) for k in params)
    assert len(payload["meta"]["history"]) == 1 and payload["meta"]["history"][0]["loss"] > 0


def test_empty_retrain_is_the_pretrained_net(digits):
    model = pretrained_like()
    ref = clone_state(model)
    out = retrain(model, digits, tiny_recipe(), units=[], mode="adversarial", seed=0).model
    assert states_equal(out.state_dict(), ref) and not out.training


# --------------------------------------------------------------------------- protocol details


def test_adversarial_pretraining_adds_no_clean_samples_retraining_does(digits, monkeypatch):
    recipe = tiny_recipe(include_clean=True, train_subset=128, steps=1)
    spied: list[list[int]] = []
    real_build = training.build_model

    def build_and_spy(*args, **kwargs):
        model = real_build(*args, **kwargs)
        spied.append(spy_training_batches(model))
        return model

    monkeypatch.setattr(training, "build_model", build_and_spy)
    pretrain("resnet18", digits, recipe, mode="adversarial", seed=0, progress=False, width=WIDTH)
    assert spied[0] == [64, 64], "adversarial pretraining must train on adversarial examples only (Madry)"
    monkeypatch.undo()

    model = pretrained_like()
    sizes = spy_training_batches(model)
    retrain(model, digits, recipe, units=["m5"], mode="adversarial", seed=0, progress=False)
    assert sizes == [128, 128], "adversarial retraining adds the clean samples (paper §3.2)"
    sizes.clear()
    retrain(model, digits, tiny_recipe(include_clean=False, train_subset=128, steps=1), units=["m5"],
            mode="adversarial", seed=0, progress=False)
    assert sizes == [64, 64]


@pytest.mark.parametrize("attack_bn_mode, forwards_per_batch", [("keep", 1 + 2 + 1), ("eval", 1)])
def test_training_attack_bn_mode(digits, attack_bn_mode, forwards_per_batch):
    """"keep" (the default): the training attack runs the trained layers in train mode, as Madry's and Wong's
    code, so their running statistics see the predicted-label pass, every attack step and the training step;
    "eval": only the training step. Frozen BatchNorm statistics stay bit-identical either way."""
    assert get_recipe("cifar10").attack_bn_mode == get_recipe("mnist5k-demo").attack_bn_mode == "keep"
    model = pretrained_like()
    reference = clone_state(model)
    recipe = tiny_recipe(steps=2, train_subset=128, attack_bn_mode=attack_bn_mode)
    retrain(model, digits, recipe, units=["m1"], mode="adversarial", seed=0, progress=False)
    after = model.state_dict()
    trained_bn = [n for n, m in model.m1.named_modules() if isinstance(m, BN)]
    assert len(trained_bn) == 4
    for name in trained_bn:
        assert int(after[f"m1.{name}.num_batches_tracked"]) == 2 * forwards_per_batch, name
    frozen = [k for k in after if not k.startswith("m1.")]
    assert all(torch.equal(after[k], reference[k]) for k in frozen)


def test_frozen_bn_adapt_moves_statistics_not_parameters(digits):
    model = pretrained_like()
    reference = clone_state(model)
    retrain(model, digits, tiny_recipe(train_subset=128, frozen_bn="adapt"), units=["m5"], mode="conventional",
            seed=0, progress=False)
    after = model.state_dict()
    frozen_bn = [n for n, m in model.named_modules() if isinstance(m, BN) and not n.startswith("m5")]
    assert len(frozen_bn) == 20
    for name in frozen_bn:
        assert not torch.equal(after[f"{name}.running_mean"], reference[f"{name}.running_mean"]), name
        assert int(after[f"{name}.num_batches_tracked"]) == int(reference[f"{name}.num_batches_tracked"]) + 2
    frozen_params = [n for n, _ in model.named_parameters() if not n.startswith("m5.")]
    assert frozen_params and all(torch.equal(after[k], reference[k]) for k in frozen_params)
    assert not torch.equal(after["m5.2.weight"], reference["m5.2.weight"])
    assert all(p.requires_grad for p in model.parameters()) and not model.training  # restored after training


# --------------------------------------------------------------------------- seeds and resumes


def test_same_seed_bit_identical(digits):
    recipe = tiny_recipe(train_subset=128)
    a = pretrain("resnet18", digits, recipe, mode="adversarial", seed=11, progress=False, width=WIDTH).model
    b = pretrain("resnet18", digits, recipe, mode="adversarial", seed=11, progress=False, width=WIDTH).model
    c = pretrain("resnet18", digits, recipe, mode="adversarial", seed=12, progress=False, width=WIDTH).model
    assert states_equal(a.state_dict(), b.state_dict())
    assert not states_equal(a.state_dict(), c.state_dict())
    assert a.spec.width == WIDTH


class _Interrupt(Exception):
    pass


def _stopped_after_first_epoch(digits, recipe, state, **kwargs):
    """Adversarial training of a seed-4 net, stopped at the end of epoch 1 as a killed job would be: its resume
    state stays at `state`."""
    def stop_after_first(epoch, model):
        if epoch == 1:
            raise _Interrupt

    torch.manual_seed(4)
    with pytest.raises(_Interrupt):
        train(build_model("resnet18", 10, 32, seed=4, width=WIDTH), digits.train, recipe, mode="adversarial", seed=4,
              state_path=state, progress=False, on_epoch_end=stop_after_first, **kwargs)


def test_resume_equals_uninterrupted(digits, tmp_path):
    recipe = tiny_recipe(train_subset=128, epochs=2)
    full = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, progress=False, width=WIDTH)
    state = tmp_path / "state.pt"
    _stopped_after_first_epoch(digits, recipe, state)
    assert state.exists()
    torch.manual_seed(999)  # the resumed run must not depend on the caller's RNG
    resumed = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, state_path=state, progress=False,
                       width=WIDTH)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    assert states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(full.history, resumed.history)]
    assert resumed.start_digest == full.start_digest != ""


def test_state_of_another_run_is_discarded(digits, tmp_path, caplog):
    state = tmp_path / "state.pt"
    recipe = tiny_recipe(train_subset=64)
    pretrain("resnet18", digits, recipe, mode="conventional", seed=1, state_path=state, progress=False, width=WIDTH)
    with caplog.at_level(logging.WARNING, logger="advlayers.core.resume"):
        other = pretrain("resnet18", digits, recipe, mode="adversarial", seed=1, state_path=state, progress=False,
                         width=WIDTH)
    assert other.resumed_from_epoch == 0
    assert "discarding training state" in caplog.text and "differs in mode" in caplog.text


def test_state_from_other_starting_weights_is_discarded(digits, tmp_path, caplog):
    """Retraining resumes only from a state made from the same pretrained net: one made from another (a
    re-run pretraining, a swapped file) is discarded, and the run starts over from the right weights."""
    recipe = tiny_recipe(train_subset=128, epochs=2)
    a, b = pretrained_like(0), pretrained_like(1)

    def run(pretrained, state_path=None):
        return retrain(copy.deepcopy(pretrained), digits, recipe, units=["m5"], mode="conventional", seed=2,
                       state_path=state_path, progress=False)

    full_a, full_b = run(a), run(b)
    state = tmp_path / "state.pt"
    steps = [0]

    def interrupt_at_step_3(optimizer, args, kwargs):  # epoch 2, batch 1 of 2
        steps[0] += 1
        if steps[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    assert signal.SIGINT in PREEMPT_SIGNALS  # (else the signal would end the test session)
    handle = register_optimizer_step_post_hook(interrupt_at_step_3)
    try:
        with pytest.raises(Preempted) as err:
            run(a, state)
    finally:
        handle.remove()
    assert err.value.code == 130 and (err.value.epoch, err.value.batch) == (1, 1)
    stale = tmp_path / "stale.pt"
    shutil.copy(state, stale)

    torch.manual_seed(5)
    resumed = run(a, state)  # the same pretrained net: resumes mid-epoch, bit-identical
    assert (resumed.resumed_from_epoch, resumed.resumed_from_batch) == (1, 1)
    assert states_equal(resumed.model.state_dict(), full_a.model.state_dict())

    with caplog.at_level(logging.WARNING, logger="advlayers.core.resume"):
        other = run(b, stale)  # another pretrained net: the state is not used
    assert "discarding training state" in caplog.text and "differs in start" in caplog.text
    assert (other.resumed_from_epoch, other.resumed_from_batch) == (0, 0) and len(other.history) == 2
    assert states_equal(other.model.state_dict(), full_b.model.state_dict())
    frozen = [k for k in b.state_dict() if not k.startswith("m5.")]
    assert all(torch.equal(other.model.state_dict()[k], b.state_dict()[k]) for k in frozen)


def test_bad_mode_units_and_sizes(digits):
    model = narrow()
    with pytest.raises(ValueError, match="unknown mode 'robust'; valid choices: conventional, adversarial"):
        train(model, digits.train, tiny_recipe(), mode="robust", seed=0)
    with pytest.raises(ValueError, match="unknown module name"):
        retrain(model, digits, tiny_recipe(), units=["m9"], mode="adversarial", seed=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        train(model, digits.train, tiny_recipe(), mode="conventional", seed=1.0)
    with pytest.raises(ValueError, match="smaller than one batch"):
        train(model, digits.train, tiny_recipe(train_subset=32), mode="conventional", seed=0)
    assert all(p.requires_grad for p in model.parameters())


def test_compile_is_off_by_default_and_ignored_on_cpu(digits, caplog):
    from test_preemption import small_net

    assert get_recipe("cifar10").compile is False and get_recipe("imagenet").compile is False
    recipe = tiny_recipe(train_subset=128, epochs=2, steps=1)
    plain = train(small_net(), digits.train, recipe, mode="adversarial", seed=2, progress=False)
    with caplog.at_level("INFO", logger="advlayers.core.training"):
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


HELDOUT = {"attack": "pgd", "images": "tuning", "n": 32, "eps": 0.1, "step_size": 0.04, "steps": 2, "restarts": 1,
           "seed": 0, "batch_size": 16}


@pytest.mark.parametrize("edit, match", [
    ({"attack": "fgsm-rs"}, r"eval_each_epoch.attack = 'fgsm-rs' is not valid; valid choices: 'pgd' \(always PGD"),
    ({"restarts": 5}, r"eval_each_epoch.restarts = 5 is not valid; valid choices: 1 \(always PGD"),
    ({"images": "confirmation"}, r"eval_each_epoch.images = 'confirmation' is not valid; valid choices: 'tuning'"),
    ({"step": 0.01}, r"eval_each_epoch settings: unknown key 'step'; valid keys: attack, images, restarts, n, eps, "
                     r"step_size, steps, seed, batch_size"),
])
def test_epoch_eval_settings_it_would_ignore_are_refused(digits, edit, match):
    """`advlayers pretrain --eval-each-epoch JSON` takes what grid.conf.epoch_eval_settings gives: another attack,
    other restarts or an unknown key would be silently ignored (PGD with one restart is what runs): one line."""
    from advlayers.core.epoch_eval import epoch_evaluator
    from advlayers.grid import conf

    assert set(HELDOUT) == set(conf.EPOCH_EVAL_FIXED) | set(conf.EPOCH_EVAL_KEYS)  # what the workflow passes
    with pytest.raises(ValueError, match=match) as e:
        epoch_evaluator(digits, "digits", {**HELDOUT, **edit})
    assert "\n" not in str(e.value)
    assert epoch_evaluator(digits, "digits", {k: v for k, v in HELDOUT.items() if k != "restarts"}) is not None


def test_epoch_eval_records_tuning_accuracy_changes_nothing_and_resumes_identically(digits, tmp_path, caplog):
    """config eval_each_epoch: each epoch's record gets the clean and PGD accuracy of n TUNING images (exactly
    `evaluate` on the tuning part); the weights and training records are those of a run without it; a run
    resumed from a state saved after epoch 1 records the same; a state without it is not resumed into a run with it."""
    from advlayers.core.attacks import AttackSpec
    from advlayers.core.epoch_eval import FIELDS, epoch_evaluator
    from advlayers.core.evaluation import evaluate
    from advlayers.core.splits import image_part

    ev = epoch_evaluator(digits, "digits", HELDOUT)
    assert len(ev.images) == vocab.tuning_size("digits", len(digits.test)) == 36
    with pytest.raises(ValueError, match="tuning part of digits's test split has 36 images"):
        epoch_evaluator(digits, "digits", {**HELDOUT, "n": 37})
    assert epoch_evaluator(digits, "digits", None) is None
    recipe = tiny_recipe(train_subset=128, epochs=2)
    plain = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, progress=False, width=WIDTH)
    full = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, progress=False, width=WIDTH, epoch_eval=ev)
    assert states_equal(full.model.state_dict(), plain.model.state_dict())
    assert [(h["loss"], h["train_acc"]) for h in full.history] == [(h["loss"], h["train_acc"]) for h in plain.history]
    assert all(set(FIELDS) <= set(h) and h["heldout_n"] == 32 and h["heldout_attack"] == "PGD-2" for h in full.history)
    direct = evaluate(full.model, image_part(digits.test, "tuning", "digits"), AttackSpec(0.1, 0.04, 2), n=32, seed=0,
                      batch_size=16, progress=False)
    assert (full.history[-1]["heldout_clean_acc"], full.history[-1]["heldout_robust_acc"]) == \
        (direct["clean_acc"], direct["robust_acc"])

    state = tmp_path / "state.pt"
    _stopped_after_first_epoch(digits, recipe, state, epoch_eval=ev)
    torch.manual_seed(999)
    resumed = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, state_path=state, progress=False,
                       width=WIDTH, epoch_eval=ev)
    assert resumed.resumed_from_epoch == 1 and states_equal(resumed.model.state_dict(), full.model.state_dict())
    timing = ("seconds", "heldout_seconds")
    assert [{k: v for k, v in h.items() if k not in timing} for h in resumed.history] == \
        [{k: v for k, v in h.items() if k not in timing} for h in full.history]
    state.unlink()  # a state saved by a run without the evaluation:
    _stopped_after_first_epoch(digits, recipe, state)
    with caplog.at_level(logging.WARNING, logger="advlayers.core.resume"):
        again = pretrain("resnet18", digits, recipe, mode="adversarial", seed=4, state_path=state, progress=False,
                         width=WIDTH, epoch_eval=ev)
    assert again.resumed_from_epoch == 0 and "discarding training state" in caplog.text  # trained afresh
    assert all("heldout_clean_acc" in h for h in again.history)
