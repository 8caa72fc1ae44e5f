"""advlayers.tools.cost: linear scaling, the adversarial multipliers, clear errors, the CLI. (The job counts against
`snakemake -n` are checked by tests/test_grid.py.)"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advlayers.grid import layout
from advlayers.grid.vocabulary import Setting
from advlayers.tools import cost

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"


def _paper():
    return cost.load_config(PAPER)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "advlayers.tools.cost", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "COLUMNS": "80"})


def test_hours_scale_linearly_with_epochs():
    base = _paper()
    doubled = copy.deepcopy(base)
    for dcfg in doubled["datasets"].values():
        epochs = cost.get_recipe(dcfg["recipe"], **dcfg.get("recipe_overrides", {})).epochs
        dcfg.setdefault("recipe_overrides", {})["epochs"] = 2 * epochs

    def hours(config, rule):
        return sum(j.seconds for j in cost.jobs(config) if j.rule == rule) / 3600

    for rule in cost.RESUMABLE:  # the training rules
        assert hours(doubled, rule) == pytest.approx(2 * hours(base, rule))
    for rule in set(cost.RULES) - set(cost.RESUMABLE):  # attacks on fixed nets: no epochs
        assert hours(doubled, rule) == pytest.approx(hours(base, rule))


def test_adversarial_and_eval_multipliers():
    cifar = cost.get_recipe("cifar10")  # PGD-7 with clean samples
    assert cost.train_units(cifar, "conventional") == 1
    assert cost.train_units(cifar, "adversarial") == 7 + 2
    assert cost.train_units(cost.get_recipe("imagenet"), "adversarial") == 1 + 1  # FGSM-RS, no clean samples
    assert cost.eval_units(200, 1) == pytest.approx(200 + 2 / 3)
    # cut-offs that retrain nothing are the pretrained nets: no retraining job, no extra evaluation
    cfg = _paper()
    cfg["cutoffs"] = {"before": [0], "after": [6]}
    cfg.pop("analyses", None)
    rules = [j.rule for j in cost.jobs(cfg)]
    assert "retrain" not in rules and rules.count("evaluate") == rules.count("pretrain") > 0


def test_eval_each_epoch_adds_one_held_out_evaluation_per_epoch_to_training_jobs_only():
    base = _paper()
    on = copy.deepcopy(base)
    on["datasets"]["cifar10"]["eval_each_epoch"] = {"n": 256}
    before, after = ({(j.rule, j.dataset, j.arch, j.name): j.seconds for j in cost.jobs(c)} for c in (base, on))
    rate = cost.throughput(cost.load_throughput(), "cifar10", "resnet18") / on["datasets"]["cifar10"].get("width", 1.0) ** 2
    ev = on["datasets"]["cifar10"]["eval"]
    one = 256 * cost.eval_units(ev["steps"], 1) / rate  # PGD with eval's steps, one restart
    epochs = cost.get_recipe("cifar10", **on["datasets"]["cifar10"].get("recipe_overrides", {})).epochs
    changed = {k for k in before if after[k] != pytest.approx(before[k])}
    assert changed and {k[0] for k in changed} <= set(cost.RESUMABLE) and {k[1] for k in changed} == {"cifar10"}
    pretrain = next(k for k in changed if k[0] == "pretrain" and k[2] == "resnet18")
    assert after[pretrain] - before[pretrain] == pytest.approx(epochs * one)


def test_adversarial_pretraining_is_priced_without_clean_samples():
    """Madry: adversarial pretraining trains on the adversarial examples only; retraining adds the clean ones
    (paper §3.2). CIFAR-10's PGD-7: pretraining costs 7 + 1 clean epochs per epoch, retraining 7 + 2."""
    jobs = {(j.rule, j.dataset, j.arch, j.name): j.seconds for j in cost.jobs(_paper())}
    for arch in ("resnet18", "vgg16_bn"):
        adv = jobs[("pretrain", "cifar10", arch, layout.job_name("pretrain", Setting("cifar10", arch, 0, "adversarial")))]
        conv = jobs[("pretrain", "cifar10", arch, layout.job_name("pretrain", Setting("cifar10", arch, 0, "conventional")))]
        assert adv / conv == pytest.approx(7 + 1)
        cell = "m110000"
        retrain_adv = jobs[("retrain", "cifar10", arch,  # conv. -> adversarial
                            layout.job_name("retrain", Setting("cifar10", arch, 0, "conventional"), group=cell))]
        retrain_conv = jobs[("retrain", "cifar10", arch,
                             layout.job_name("retrain", Setting("cifar10", arch, 0, "adversarial"), group=cell))]
        assert retrain_adv / retrain_conv == pytest.approx(7 + 2)
    # ImageNet's FGSM-RS without clean samples: 1 + 1 either way
    adv, conv = (jobs[("pretrain", "imagenet", "resnet50", layout.job_name("pretrain", Setting("imagenet", "resnet50", 0, p)))]
                 for p in ("adversarial", "conventional"))
    assert adv / conv == pytest.approx(2)


def test_unknown_arch_is_a_clear_error(tmp_path):
    table = cost.load_throughput()
    del table["cifar10"]["vgg16_bn"]
    with pytest.raises(cost.CostModelError, match=r"no reference throughput for arch 'vgg16_bn' on dataset 'cifar10'"):
        cost.jobs(_paper(), table)
    # through the CLI: exit status 2 and the message, no traceback
    override = tmp_path / "rates.yaml"
    override.write_text(yaml.safe_dump({"cifar10": {"resnet18": "fast"}}))
    proc = _cli("--configfile", str(PAPER), "--throughput", str(override))
    assert proc.returncode == 2 and "throughput of resnet18 on cifar10 must be > 0" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_or_foreign_config_is_a_one_line_error(tmp_path):
    for args, message in [
        (["--configfile", "missing.yaml"], "advlayers cost: error: config file missing.yaml does not exist"),
        (["--configfile", str(tmp_path / "nope.yaml")], "does not exist (pass --configfile PATH)"),
        (["--throughput", str(tmp_path / "rates.yaml")], "No such file or directory"),
    ]:
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    (tmp_path / "other.yaml").write_text("just: text\n")
    proc = _cli("--configfile", "other.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "not a workflow config (needs 'datasets' and 'cutoffs')" in proc.stderr


def test_default_config_is_found_from_any_working_directory(tmp_path):
    """The default is the checkout's config/paper.yaml, resolved from the package, not from the working directory."""
    assert cost.DEFAULT_CONFIG == PAPER
    here = _cli(cwd=REPO)
    elsewhere = _cli(cwd=tmp_path)
    assert here.returncode == elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout == here.stdout
    total = sum(cost.job_counts(_paper()).values())
    assert f"| **total** | {total} |" in elsewhere.stdout


def test_help_is_short():
    proc = _cli("--help")
    assert proc.returncode == 0 and "--configfile" in proc.stdout and "--measure" in proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert len(lines) < 25, f"--help has {len(lines)} lines (at 80 columns):\n{proc.stdout}"


def test_throughput_override_and_cli_table(tmp_path):
    override = tmp_path / "rates.yaml"
    override.write_text(yaml.safe_dump({"imagenet": {"resnet50": 2 * cost.THROUGHPUT["imagenet"]["resnet50"]}}))
    base = sum(j.seconds for j in cost.jobs(_paper()) if j.dataset == "imagenet")
    faster = sum(j.seconds for j in cost.jobs(_paper(), cost.load_throughput(override)) if j.dataset == "imagenet")
    assert faster == pytest.approx(base / 2)
    proc = _cli("--configfile", str(PAPER))
    assert proc.returncode == 0, proc.stderr
    total = sum(cost.job_counts(_paper()).values())
    assert f"| **total** | {total} |" in proc.stdout
    retrains = sum(1 for j in cost.jobs(_paper()) if (j.rule, j.dataset, j.arch) == ("retrain", "imagenet", "resnet50"))
    assert retrains > 0 and f"| imagenet | resnet50 | retrain | {retrains} |" in proc.stdout


def test_measure_writes_a_throughput_table(tmp_path):
    rates = cost.measure(["digits"], ["resnet18"], device="cpu", steps=1, warmup=0, batch_size=4)
    assert set(rates) == {"digits"} and rates["digits"]["resnet18"] > 0
    path = tmp_path / "measured.yaml"
    path.write_text(yaml.safe_dump(rates))
    assert cost.load_throughput(path)["digits"]["resnet18"] == rates["digits"]["resnet18"]
