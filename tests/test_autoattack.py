"""AutoAttack / APGD (the reference implementation, pyautoattack) through `evaluation.evaluate`, and evaluation of
a plain DataLoader.

The net is a width-0.25 ResNet-18 trained adversarially on sklearn's digits for 3 epochs (a few seconds, the same
net on every run of torch 2.13 on a CPU), so robust accuracy at eps 0.1 is well above 0 and the comparison with
PGD means something. Standard AutoAttack on its 64 test images takes about 30 s on one idle CPU thread
(this file: about 1.5 minutes).

Before the reference implementation advlayers ran AutoAttack through torchattacks 3.5.1; on this net and these
64 images that gave (measured 2026-12-05, torch 2.13.0+cpu, this test's `robust_net` and `digits` fixtures):
clean 60/64, PGD-20 19/64, torchattacks AutoAttack-standard 10/64, torchattacks APGD-CE-50 16/64. The test
compares with torchattacks itself when it is installed, else with these numbers (when the net is the same:
its clean and PGD-20 counts match).
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advlayers.core.attacks import AttackSpec
from advlayers.core.autoattack import APGDSpec, AutoAttackCheckWarning, AutoAttackSpec
from advlayers.core.datasets import load_dataset
from advlayers.core.evaluation import evaluate
from advlayers.core.recipes import get_recipe
from advlayers.core.training import pretrain

N = 64
EPS = 0.1
TORCHATTACKS_3_5_1 = {"clean": 60, "PGD-20": 19, "AutoAttack-standard": 10, "APGD-CE-50": 16}  # see above


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def robust_net(digits):
    recipe = get_recipe("mnist5k-demo", epochs=3, precision="fp32", channels_last=False)
    return pretrain("resnet18", digits, recipe, mode="adversarial", seed=0, progress=False, width=0.25).model.eval()


@pytest.fixture(scope="module")
def standard_aa(robust_net, digits):
    """Standard AutoAttack on the N images (the expensive part of this file, run once), and whether the caller's
    RNG state survived it."""
    rng = torch.get_rng_state()
    aa = evaluate(robust_net, digits.test, AutoAttackSpec(EPS), n=N, progress=False, outcomes=True, arch="resnet18")
    return aa, torch.equal(torch.get_rng_state(), rng)


def test_autoattack_is_at_least_as_strong_as_pgd(robust_net, digits, standard_aa):
    pgd = evaluate(robust_net, digits.test, AttackSpec(EPS, 0.025, 20), n=N, progress=False, outcomes=True)
    aa, rng_kept = standard_aa
    assert rng_kept  # the reference's seeding stayed inside fork_rng
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
    after = aa["robust_acc_after"]
    assert list(after) == ["apgd-ce", "apgd-t", "fab-t", "square"]  # the reference's standard version, in order
    assert all(a >= b for a, b in zip(list(after.values()), list(after.values())[1:]))  # each attack on the rest
    assert after["square"] == aa["robust_acc"] and aa["checks"] == []  # a plain ReLU net passes the checks


def _wilson_agree(k1: int, k2: int, n: int) -> bool:
    """Each count's proportion lies in the other's 95% Wilson interval."""
    from advlayers.stats import wilson

    (lo1, hi1), (lo2, hi2) = wilson(k1, n), wilson(k2, n)
    return lo1 <= k2 / n <= hi1 and lo2 <= k1 / n <= hi2


def _old_numbers(net, digits):
    """The torchattacks numbers on this net: computed when torchattacks is installed, else the recorded ones."""
    try:
        import torchattacks
    except ImportError:
        return TORCHATTACKS_3_5_1
    split = digits.test.subset(N, seed=0)
    x, y = split.x.float() / 255, split.y
    old = {"clean": int((net(x).argmax(1) == y).sum())}
    for name, attack in (("AutoAttack-standard", torchattacks.AutoAttack(net, eps=EPS, n_classes=10, seed=0)),
                         ("APGD-CE-50", torchattacks.APGD(net, eps=EPS, steps=50, seed=0))):
        with torch.random.fork_rng():
            old[name] = int((net(attack(x, y)).argmax(1) == y).sum())
    return old


def test_reference_agrees_with_torchattacks_and_many_restarts(robust_net, digits, standard_aa):
    pgd = evaluate(robust_net, digits.test, AttackSpec(EPS, 0.025, 20), n=N, progress=False)
    pgd10 = evaluate(robust_net, digits.test, AttackSpec(EPS, 0.025, 20, restarts=10), n=N, progress=False)
    new = {"clean": round(pgd["clean_acc"] * N), "PGD-20": round(pgd["robust_acc"] * N)}
    apgd = evaluate(robust_net, digits.test, APGDSpec(EPS, steps=50), n=N, progress=False)
    for r in (standard_aa[0], apgd):
        new[r["attack"]] = round(r["robust_acc"] * N)
        assert r["robust_acc"] <= pgd10["robust_acc"] + 1 / N  # PGD with 10 restarts bounds it from above
    old = _old_numbers(robust_net, digits)
    if old is TORCHATTACKS_3_5_1 and (new["clean"], new["PGD-20"]) != (old["clean"], old["PGD-20"]):
        pytest.skip(f"torchattacks is not installed and this net differs from the recorded one ({new})")
    print(f"reference {new}, torchattacks {old}")
    for name in ("AutoAttack-standard", "APGD-CE-50"):
        assert _wilson_agree(new[name], old[name], N), (name, new[name], old[name])


def test_custom_version_and_single_attacks(robust_net, digits):
    custom = AutoAttackSpec(EPS, version="custom", attacks=["apgd-ce", "apgd-dlr"])
    assert custom.name == "AutoAttack-custom[apgd-ce+apgd-dlr]" and custom.attacks == ("apgd-ce", "apgd-dlr")
    r = evaluate(robust_net, digits.test, custom, n=16, progress=False)
    assert list(r["robust_acc_after"]) == ["apgd-ce", "apgd-dlr"]
    assert r["robust_acc_after"]["apgd-dlr"] == r["robust_acc"] <= r["robust_acc_after"]["apgd-ce"]
    dlr = evaluate(robust_net, digits.test, APGDSpec(EPS, steps=20, loss="dlr"), n=32, progress=False)
    assert dlr["attack"] == "APGD-DLR-20" and list(dlr["robust_acc_after"]) == ["apgd-dlr"]
    l2 = evaluate(robust_net, digits.test, APGDSpec(1.0, steps=20, norm="L2"), n=32, progress=False)
    assert l2["attack"] == "APGD-CE-20-L2" and l2["robust_acc"] <= l2["clean_acc"]
    for bad, match in ((dict(version="custom"), "needs attacks"), (dict(version="custom", attacks=["pgd"]), "pgd"),
                       (dict(version="standard", attacks=["apgd-ce"]), "only with version 'custom'"),
                       (dict(version="custom", attacks=["square", "square"]), "twice")):
        with pytest.raises(ValueError, match=match):
            AutoAttackSpec(EPS, **bad)


class _Rounded(nn.Module):
    """Logits rounded to integers: zero input gradient everywhere (gradient masking)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.round(self.net(x) * 100)


def test_reference_checks_become_warnings(robust_net, digits):
    masked = _Rounded(robust_net)
    with pytest.warns(AutoAttackCheckWarning, match="zero gradient"):  # the reference checks it with the DLR loss
        r = evaluate(masked, digits.test, APGDSpec(EPS, steps=5, loss="dlr"), n=16, progress=False)
    assert any("zero gradient" in m for m in r["checks"])
    softmax = nn.Sequential(robust_net, nn.Softmax(dim=1))
    with pytest.warns(AutoAttackCheckWarning, match="probability distribution"):
        AutoAttackSpec(EPS, version="custom", attacks=["apgd-ce"]).robust_correct(
            softmax, digits.test.subset(8, seed=0).x.float() / 255, digits.test.subset(8, seed=0).y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plain net: no warning
        evaluate(robust_net, digits.test, APGDSpec(EPS, steps=5), n=16, progress=False)


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
    assert AutoAttackSpec(8 / 255, version="plus").attack_names() == ("apgd-ce", "apgd-dlr", "fab", "square",
                                                                     "apgd-t", "fab-t")
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
