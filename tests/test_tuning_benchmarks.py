"""benchmarks/eval_strength.py (the evaluation attack beside APGD-CE/DLR) and benchmarks/tune_demo.py (the
retraining control's sizing): their pure parts on small nets and hand-made rows."""

import importlib.util
import sys

import pytest

from advlayers.core.splits import image_part

from helpers import REPO, small_net


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def strength():
    return _load("eval_strength")


@pytest.fixture(scope="module")
def tune():
    return _load("tune_demo")


def test_ensemble_robust_accuracy_only_falls(strength, digits):
    settings = {"attack": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 2, "seed": 0, "batch_size": 64, "n": 20}
    split = image_part(digits.test, "tuning", "digits")
    out = strength.robust_under_ensemble(small_net().eval(), split, settings, strength.ensemble(settings, 3))
    names = ["PGD-2", "APGD-CE-3", "APGD-DLR-3"]
    assert [k for k in out if k not in ("clean", "seconds")] == names
    assert out["clean"] >= out[names[0]] >= out[names[1]] >= out[names[2]] >= 0


def _row(seed, pretraining, cell, pgd, ce, dlr):
    return {"seed": seed, "pretraining": pretraining, "cell": cell, "images": "tuning", "n": 500, "clean": 0.97,
            "attacks": ["PGD-10", "APGD-CE-100", "APGD-DLR-100"], "PGD-10": pgd, "APGD-CE-100": ce,
            "APGD-DLR-100": dlr}


def test_strength_table_gives_drops_and_fractions_of_G(strength):
    rows = [_row(0, "conventional", "pretrained", 0.0, 0.0, 0.0), _row(0, "adversarial", "pretrained", 0.6, 0.55, 0.5),
            _row(0, "conventional", "m111111", 0.45, 0.42, 0.4)]
    text = strength.markdown(rows)
    line = next(l for l in text.splitlines() if "before 6 (control)" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[7] == "5.0" and cells[8] == "0.75" and cells[9] == "0.80" and cells[10] == "+0.05"
    assert "largest drop 10.0 points (adversarial net, seed 0, pretrained)" in text


def test_tune_settings_and_controls(tune):
    assert tune.parse_setting("epochs=3,lr=0.008,channels_last=true") == {"epochs": 3, "lr": 0.008,
                                                                          "channels_last": True}
    assert tune.setting_name({"lr": 0.008, "epochs": 3}) == "epochs=3,lr=0.008"
    rows = {(0, "pretrained", "conventional"): {"robust_acc": 0.0},
            (0, "pretrained", "adversarial"): {"robust_acc": 0.6},
            (0, "epochs=3", "conventional"): {"robust_acc": 0.54, "seconds": 10.0, "samples": 1000},
            (0, "epochs=3", "adversarial"): {"robust_acc": 0.06, "seconds": 5.0, "samples": 1000}}
    text = tune.table(rows)
    assert "| epochs=3 | 0 | 0.600 | 0.90 | 0.90 |" in text and "| epochs=3 | 1 | 0.90 | 0.90 | yes |" in text


def _ens(seed, pretraining, cell, final, steps, seconds=1.0):
    names = ["PGD-10", f"APGD-CE-{steps}", f"APGD-DLR-{steps}"]
    return {"seed": seed, "pretraining": pretraining, "cell": cell, "clean": 0.97, "attacks": names,
            "apgd_steps": steps, "seconds": seconds, names[0]: final + 0.05, names[1]: final + 0.01, names[2]: final}


def test_choose_apgd_steps_applies_the_registered_rule():
    choose = _load("choose_apgd_steps")
    cells = [("conventional", "pretrained", 0.0), ("adversarial", "pretrained", 0.6), ("conventional", "m111111", 0.5)]
    reference = [_ens(0, p, c, v, 100) for p, c, v in cells]
    near = [_ens(0, p, c, v + 0.01 * (v > 0), 25) for p, c, v in cells]  # one point more where robust
    far = [_ens(0, p, c, v, 10) for p, c, v in cells[:2]] + [_ens(0, "conventional", "m111111", 0.52, 10)]
    chosen, verdicts = choose.choose(reference, {10: far, 25: near})
    assert chosen == 25 and not verdicts[10]["qualifies"] and verdicts[10]["max_acc_diff"] == pytest.approx(0.02)
    assert verdicts[25]["max_acc_diff"] == pytest.approx(0.01)
    assert verdicts[25]["max_g_diff"] == pytest.approx(0.51 / 0.61 - 0.5 / 0.6)
    strict = choose.choose(reference, {25: near}, g_tolerance=0.001)
    assert strict[0] == 100  # nothing qualifies: the reference itself
    assert "apgd_steps 10:" in choose.table(reference, {10: far, 25: near}, verdicts)


def test_beyond_refuses_settings_it_would_ignore(strength, tmp_path):
    """--beyond attacks the survivors of the run's own evaluation (its outcomes): a PGD/APGD setting given with it
    would be silently unused, and images of another part have no survivors to read: both are refused."""
    from advlayers.grid import layout
    from advlayers.io import write_parquet

    with pytest.raises(SystemExit, match="--pgd-steps: not used with --beyond"):
        strength.main(["--images", "confirmation", "--beyond", "apgd-t", "--pgd-steps", "5", "--workdir", str(tmp_path)])
    write_parquet(tmp_path / layout.table_path("outcomes"),
                  [{"image_part": "confirmation", "cell": "pretrained", "robust_correct": True}], metadata={"inputs": {}})
    with pytest.raises(SystemExit, match="outcomes are of the confirmation images"):
        strength.main(["--images", "tuning", "--beyond", "apgd-t", "--workdir", str(tmp_path)])


def test_tuning_rows_of_another_pretraining_are_not_reused(tune, tmp_path, monkeypatch):
    """A control retrained from the nets of an earlier config must not meet the G of the current one."""
    import json

    monkeypatch.setattr(tune, "WORK", tmp_path)
    monkeypatch.setattr(tune, "RESULTS", tmp_path / "results.jsonl")
    old = {"seed": 0, "setting": "epochs=5", "net": "conventional", "attack": tune.attack_name(), "robust_acc": 0.5,
           "pretraining": "recipe=mnist5k-demo,width=0.5,epochs=3"}
    tune.RESULTS.write_text(json.dumps(old) + "\n" + json.dumps({k: v for k, v in old.items() if k != "pretraining"})
                            + "\n")
    assert tune.done() == {}
    tune.record({**old, "robust_acc": 0.6, "pretraining": None})
    assert [r["robust_acc"] for r in tune.done().values()] == [0.6]
    assert tune.done()[(0, "epochs=5", "conventional")]["pretraining"] == tune.pretraining()
