"""Scientific sanity of the protocol on real data (sklearn's digits, the same code paths as the workflow):
a conventionally trained net is accurate and not robust; an adversarially trained one is far more robust."""

import pytest

from advlayers.attacks import AttackSpec
from advlayers.evaluation import evaluate
from advlayers.training import get_recipe, pretrain

pytestmark = pytest.mark.slow


def test_adversarial_pretraining_buys_robustness(digits, trained_digits_model):
    recipe = get_recipe("mnist5k-demo", epochs=3, batch_size=64, precision="fp32", channels_last=False)
    adversarial = pretrain("resnet18", digits, recipe, mode="adversarial", seed=0, progress=False).model
    attack = AttackSpec(eps=0.1, step_size=0.025, steps=20)
    conv = evaluate(trained_digits_model, digits.test, attack, progress=False)
    adv = evaluate(adversarial, digits.test, attack, progress=False)
    assert conv["clean_acc"] >= 0.95
    assert conv["robust_acc"] <= 0.2
    assert adv["robust_acc"] >= conv["robust_acc"] + 0.3, (conv, adv)
