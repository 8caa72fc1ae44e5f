"""The evaluation attack `eval.attack: apgd` (core.ensemble.APGDEnsembleSpec): PGD, then APGD-CE, then APGD-DLR on
the survivors. It is never weaker than its PGD stage, its breakdown only falls, outcomes are exact and repeat
with the same seed, and the config, the cost model and the figure labels know it."""

import copy

import numpy as np
import pytest
import yaml

from advlayers.core.attacks import AttackSpec
from advlayers.core.ensemble import APGDEnsembleSpec
from advlayers.core.evaluation import attack_from_settings, evaluate
from advlayers.grid import conf, validate, vocabulary as vocab
from advlayers.report.figures.style import attack_text
from advlayers.tools import cost_model

from helpers import REPO

N = 32
SETTINGS = {"attack": "apgd", "eps": 0.03, "step_size": 0.0075, "steps": 5, "restarts": 1, "apgd_steps": 5,
            "seed": 0}


@pytest.fixture(scope="module")
def runs(trained_digits_model, digits):
    """The PGD stage alone and the ensemble (twice, same seed) on the same N test images."""
    net = trained_digits_model.eval()
    pgd = evaluate(net, digits.test, attack_from_settings({**SETTINGS, "attack": "pgd"}), n=N, seed=0,
                   progress=False, outcomes=True)
    ens = [evaluate(net, digits.test, attack_from_settings(SETTINGS), n=N, seed=0, progress=False, outcomes=True)
           for _ in range(2)]
    return pgd, ens


def test_apgd_is_never_weaker_than_its_pgd_stage(runs):
    pgd, (ens, _) = runs
    print(f"clean {pgd['clean_acc']:.3f}, PGD-5 {pgd['robust_acc']:.3f}, breakdown {ens['robust_acc_after']}")
    assert 0 < pgd["robust_acc"] < pgd["clean_acc"]  # the comparison means something on this net
    assert ens["attack"] == "PGD-5+APGD-CE-5+APGD-DLR-5" and ens["apgd_steps"] == 5
    assert ens["clean_acc"] == pgd["clean_acc"] and ens["robust_acc"] <= pgd["robust_acc"]
    # the PGD stage draws the same random start as PGD alone: image by image it is that evaluation
    assert ens["robust_acc_after"]["PGD-5"] == pgd["robust_acc"]
    p, e = pgd["outcomes"], ens["outcomes"]
    assert np.array_equal(p["test_index"], e["test_index"])
    assert not (e["robust_correct"] & ~p["robust_correct"]).any()  # robust under the ensemble => under PGD
    assert not (e["robust_correct"] & ~e["clean_correct"]).any()
    assert isinstance(ens["checks"], list)


def test_breakdown_is_monotone_and_ends_at_the_robust_accuracy(runs):
    _, (ens, _) = runs
    after = ens["robust_acc_after"]
    assert list(after) == ["PGD-5", "APGD-CE-5", "APGD-DLR-5"]
    values = list(after.values())
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == ens["robust_acc"] == ens["outcomes"]["robust_correct"].mean()


def test_same_seed_same_outcomes(runs):
    _, (a, b) = runs
    for key in ("test_index", "clean_correct", "robust_correct"):
        assert np.array_equal(a["outcomes"][key], b["outcomes"][key])
    assert a["robust_acc_after"] == b["robust_acc_after"]


def test_spec_checks_and_bad_kind():
    pgd = AttackSpec(0.1, 0.025, 10)
    assert APGDEnsembleSpec(pgd, apgd_steps=25).name == "PGD-10+APGD-CE-25+APGD-DLR-25"
    with pytest.raises(ValueError, match="apgd_steps"):
        APGDEnsembleSpec(pgd, apgd_steps=0)
    with pytest.raises(TypeError, match="AttackSpec"):
        APGDEnsembleSpec("pgd")
    with pytest.raises(ValueError, match="valid choices: pgd, autoattack, apgd"):
        attack_from_settings({**SETTINGS, "attack": "apdg"})


def _demo():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_config_validates_the_new_keys():
    config = _demo()
    ev = config["datasets"]["mnist5k"]["eval"]
    ev.update(attack="apgd", apgd_steps=25)
    validate.check(validate.apply_schema(copy.deepcopy(config)))
    settings = conf.eval_settings(validate.apply_schema(copy.deepcopy(config)), "mnist5k")
    assert attack_from_settings(settings).name == f"PGD-{ev['steps']}+APGD-CE-25+APGD-DLR-25"
    for key, value, message in (("attack", "apdg", "pgd.*autoattack.*apgd"), ("apgd_steps", 0, "minimum of 1")):
        bad = copy.deepcopy(config)
        bad["datasets"]["mnist5k"]["eval"][key] = value
        with pytest.raises(vocab.ConfigError, match=rf"config error: datasets.mnist5k.eval.{key}.*{message}"):
            validate.apply_schema(bad)
    assert conf.default("datasets", "*", "eval", "apgd_steps") == 100


def test_cost_model_prices_the_ensemble():
    pgd = cost_model.eval_units(10, 1)
    assert cost_model.eval_units(10, 1, "apgd", 25) == pytest.approx(pgd + 2 * (25 + 1 / 3))
    assert cost_model.eval_units(10, 1, "autoattack") > cost_model.eval_units(10, 1, "apgd", 100)
    with pytest.raises(cost_model.CostModelError, match="valid choices: pgd, autoattack, apgd"):
        cost_model.eval_units(10, 1, "apdg")


def test_figure_label_is_the_records_name():
    settings = {**SETTINGS, "apgd_steps": 25, "steps": 10, "n": 500}
    assert attack_text(settings).startswith(attack_from_settings(settings).name + ",")
    assert attack_text({"attack": "autoattack", "eps": 0.1}).startswith("AutoAttack-standard,")
