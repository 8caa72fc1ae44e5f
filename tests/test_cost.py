"""advlayers.cost: the paper grid's job count against `snakemake -n`, linear scaling, clear errors."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advlayers import cost

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"


def _paper():
    return cost.load_config(PAPER)


def _job_stats(configfile) -> dict[str, int]:
    """`snakemake -n`'s job-stats table ({rule: count}) for the all_figures target."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all_figures",
                           "--configfile", str(configfile)], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    table = out[out.index("Job stats:"):].split("\n\n")[0]  # up to the blank line after the table
    stats = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    assert "total" in stats, out[-3000:]
    return stats


def test_cell_count_matches_the_paper_dag():
    stats = _job_stats(PAPER)
    counts = cost.job_counts(_paper())
    assert counts == {stage: stats.get(stage, 0) for stage in cost.STAGES}
    assert counts["retrain"] > 0 and counts["evaluate"] > 0
    # every other job of the DAG is CPU-only or runs locally (data, embeddings, tables, figures, targets)
    assert set(stats) - set(cost.STAGES) <= {"prepare_data", "embed_features", "feature_divergence", "total"} | {
        r for r in stats if r.startswith(("table", "figure", "all_"))}, stats
    # and every job is priced (the default table covers the paper grid); only the empty subset trains nothing
    assert [j.name for j in cost.jobs(_paper()) if j.seconds == 0] == ["subset_conventional_000000"]


def test_hours_scale_linearly_with_epochs():
    base = _paper()
    doubled = copy.deepcopy(base)
    for dcfg in doubled["datasets"].values():
        epochs = cost.get_recipe(dcfg["recipe"], **dcfg.get("recipe_overrides", {})).epochs
        dcfg.setdefault("recipe_overrides", {})["epochs"] = 2 * epochs

    def hours(config, stage):
        return sum(j.seconds for j in cost.jobs(config) if j.stage == stage) / 3600

    for stage in cost.RESUMABLE:  # the training stages
        assert hours(doubled, stage) == pytest.approx(2 * hours(base, stage))
    for stage in set(cost.STAGES) - set(cost.RESUMABLE):  # attacks on fixed nets: no epochs
        assert hours(doubled, stage) == pytest.approx(hours(base, stage))


def test_adversarial_and_eval_multipliers():
    cifar = cost.get_recipe("cifar10")  # PGD-7 with clean samples
    assert cost.train_units(cifar, "conventional") == 1
    assert cost.train_units(cifar, "adversarial") == 7 + 2
    assert cost.train_units(cost.get_recipe("imagenet"), "adversarial") == 1 + 1  # FGSM-RS, no clean samples
    assert cost.eval_units(200, 1) == pytest.approx(200 + 2 / 3)
    # cut-offs that retrain nothing cost nothing
    cfg = _paper()
    cfg["cutoffs"] = {"before": [0], "after": [6]}
    retrains = [j for j in cost.jobs(cfg) if j.stage == "retrain"]
    assert retrains and all(j.seconds == 0 for j in retrains)


def test_unknown_arch_is_a_clear_error(tmp_path):
    table = cost.load_throughput()
    del table["cifar10"]["vgg16_bn"]
    with pytest.raises(cost.CostModelError, match=r"no reference throughput for arch 'vgg16_bn' on dataset 'cifar10'"):
        cost.jobs(_paper(), table)
    # through the CLI: exit status 2 and the message, no traceback
    override = tmp_path / "rates.yaml"
    override.write_text(yaml.safe_dump({"cifar10": {"resnet18": "fast"}}))
    proc = subprocess.run([sys.executable, "-m", "advlayers.cost", "--configfile", str(PAPER), "--throughput",
                           str(override)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "throughput of resnet18 on cifar10 must be > 0" in proc.stderr, proc.stderr


def test_throughput_override_and_cli_table(tmp_path):
    override = tmp_path / "rates.yaml"
    override.write_text(yaml.safe_dump({"imagenet": {"resnet50": 2 * cost.THROUGHPUT["imagenet"]["resnet50"]}}))
    base = sum(j.seconds for j in cost.jobs(_paper()) if j.dataset == "imagenet")
    faster = sum(j.seconds for j in cost.jobs(_paper(), cost.load_throughput(override)) if j.dataset == "imagenet")
    assert faster == pytest.approx(base / 2)
    proc = subprocess.run([sys.executable, "-m", "advlayers.cost", "--configfile", str(PAPER)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    total = sum(cost.job_counts(_paper()).values())
    assert f"| **total** | {total} |" in proc.stdout and "| imagenet | resnet50 | retrain | 24 |" in proc.stdout


def test_measure_writes_a_throughput_table(tmp_path):
    rates = cost.measure(["digits"], ["resnet18"], device="cpu", steps=1, warmup=0, batch_size=4)
    assert set(rates) == {"digits"} and rates["digits"]["resnet18"] > 0
    path = tmp_path / "measured.yaml"
    path.write_text(yaml.safe_dump(rates))
    assert cost.load_throughput(path)["digits"]["resnet18"] == rates["digits"]["resnet18"]
