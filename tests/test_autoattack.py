"""AutoAttack / APGD through `evaluation.evaluate`, and evaluation of a plain DataLoader.

The net is a width-0.25 ResNet-18 trained adversarially on sklearn's digits for 3 epochs (a few seconds), so
robust accuracy at eps 0.1 is well above 0 and the comparison with PGD means something. Standard AutoAttack on
its 64 test images takes about 20 s on one CPU thread.
"""

import numpy as np
import pytest
import torch

from advlayers.core.attacks import AttackSpec
from advlayers.core.autoattack import APGDSpec, AutoAttackSpec
from advlayers.core.datasets import load_dataset
from advlayers.core.evaluation import evaluate
from advlayers.core.recipes import get_recipe
from advlayers.core.training import pretrain

N = 64
EPS = 0.1


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def robust_net(digits):
    recipe = get_recipe("mnist5k-demo", epochs=3, precision="fp32", channels_last=False)
    return pretrain("resnet18", digits, recipe, mode="adversarial", seed=0, progress=False, width=0.25).model.eval()


def test_autoattack_is_at_least_as_strong_as_pgd(robust_net, digits):
    pgd = evaluate(robust_net, digits.test, AttackSpec(EPS, 0.025, 20), n=N, progress=False, outcomes=True)
    rng = torch.get_rng_state()
    aa = evaluate(robust_net, digits.test, AutoAttackSpec(EPS), n=N, progress=False, outcomes=True, arch="resnet18")
    assert torch.equal(torch.get_rng_state(), rng)  # torchattacks' seeding stayed inside fork_rng
    print(f"clean {pgd['clean_acc']:.3f}, PGD-20 {pgd['robust_acc']:.3f}, AutoAttack {aa['robust_acc']:.3f} "
          f"({aa['seconds']:.1f} s)")
    assert aa["attack"] == "AutoAttack-standard" and aa["arch"] == "resnet18"
    assert aa["n_eval"] == pgd["n_eval"] == N
    assert np.array_equal(aa["outcomes"]["test_index"], pgd["outcomes"]["test_index"])  # the same images
    assert np.array_equal(aa["outcomes"]["clean_correct"], pgd["outcomes"]["clean_correct"])
    assert pgd["robust_acc"] > 0.05  # the adversarially trained net is robust to something
    assert aa["robust_acc"] <= pgd["robust_acc"] + 1 / N
    assert not (aa["outcomes"]["robust_correct"] & ~aa["outcomes"]["clean_correct"]).any()
    assert {k: aa[k] for k in ("eps", "step_size", "steps", "restarts", "random_start", "version", "norm")} == {
        "eps": EPS, "step_size": None, "steps": None, "restarts": 1, "random_start": False, "version": "standard",
        "norm": "Linf"}


def test_apgd_is_cheap_and_strong(robust_net, digits):
    pgd = evaluate(robust_net, digits.test, AttackSpec(EPS, 0.025, 20), n=N, progress=False)
    apgd = evaluate(robust_net, digits.test, APGDSpec(EPS, steps=50), n=N, progress=False)
    again = evaluate(robust_net, digits.test, APGDSpec(EPS, steps=50), n=N, progress=False)
    assert apgd["attack"] == "APGD-CE-50" and apgd["steps"] == 50
    assert apgd["robust_acc"] <= pgd["robust_acc"] + 2 / N
    assert apgd["robust_acc"] == again["robust_acc"]  # seeded


def test_plain_dataloader_gives_the_split_result(robust_net, digits):
    split = digits.test.subset(N, seed=0)
    x = split.x.float() / 255
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, split.y), batch_size=32)
    attack = AttackSpec(EPS, 0.025, 5)
    ours = evaluate(robust_net, split, attack, batch_size=32, progress=False, outcomes=True)
    plain = evaluate(robust_net, loader, attack, batch_size=32, progress=False, outcomes=True)
    assert plain["n_eval"] == ours["n_eval"] == N
    assert plain["clean_acc"] == ours["clean_acc"] and plain["robust_acc"] == ours["robust_acc"]
    assert np.array_equal(plain["outcomes"]["robust_correct"], ours["outcomes"]["robust_correct"])
    assert list(plain["outcomes"]["test_index"]) == list(range(N))  # positions in iteration order
    first = evaluate(robust_net, loader, AttackSpec(0, 0, 0), n=40, progress=False)  # n cuts a batch
    assert first["n_eval"] == 40


def test_spec_checks_and_names(robust_net):
    assert AutoAttackSpec(8 / 255).name == "AutoAttack-standard"
    assert AutoAttackSpec(8 / 255, version="rand").name == "AutoAttack-rand"
    assert AutoAttackSpec(0.5, norm="L2").name == "AutoAttack-standard-L2"
    assert APGDSpec(8 / 255, loss="dlr", steps=10).name == "APGD-DLR-10"
    for bad in (dict(eps=8), dict(eps=-0.1), dict(eps="8/255"), dict(eps=0.1, version="fast"),
                dict(eps=0.1, norm="L1"), dict(eps=0.1, n_classes=1)):
        with pytest.raises(ValueError):
            AutoAttackSpec(**bad)
    with pytest.raises(ValueError, match="loss"):
        APGDSpec(0.1, loss="margin")
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AutoAttackSpec(0.1).robust_correct(robust_net, x * 255, y)
    clean, robust = AutoAttackSpec(0.0).robust_correct(robust_net, x, y)
    assert torch.equal(clean, robust)
    assert all(p.requires_grad for p in robust_net.parameters())  # attack_mode restored them
