"""Scientific sanity of the protocol on real data (sklearn's digits, the same code paths as the workflow, a narrow
resnet18 as in the embedded demo): a conventionally trained net is accurate and not robust; an adversarially
trained one (the demo recipe: FGSM-RS, eps 0.1, adversarial examples only) is far more robust under PGD-20."""

from advlayers.core.attacks import AttackSpec
from advlayers.core.evaluation import evaluate
from advlayers.core.recipes import get_recipe
from advlayers.core.training import pretrain

from helpers import WIDTH


def test_adversarial_pretraining_buys_robustness(digits, trained_digits_model):
    recipe = get_recipe("mnist5k-demo", epochs=3, batch_size=64, precision="fp32", channels_last=False)
    adversarial = pretrain("resnet18", digits, recipe, mode="adversarial", seed=0, progress=False,
                           width=WIDTH).model
    assert adversarial.spec.width == trained_digits_model.spec.width == WIDTH
    attack = AttackSpec(eps=0.1, step_size=0.025, steps=20)
    conv = evaluate(trained_digits_model, digits.test, attack, progress=False)
    adv = evaluate(adversarial, digits.test, attack, progress=False)
    assert conv["n_eval"] == adv["n_eval"] == 360
    assert conv["clean_acc"] >= 0.9, conv
    assert conv["robust_acc"] <= 0.1, conv
    assert adv["clean_acc"] >= 0.8, adv
    # clearly more robust: the intervals do not overlap, and by a margin
    assert adv["robust_acc"] >= conv["robust_acc"] + 0.15, (conv, adv)
    assert adv["robust_acc_lo"] > conv["robust_acc_hi"], (conv, adv)
