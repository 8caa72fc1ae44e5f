"""advlayers.tools.sizing: each GPU job's time limit comes from the cost model (x a safety factor) unless the config
sets it, never exceeds the partition's limit, and config/paper.yaml fits that limit. (That the workflow asks for
exactly these runtimes is checked against `snakemake -n` in tests/test_grid.py.)"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advlayers.grid import conf
from advlayers.grid.vocabulary import ConfigError
from advlayers.tools import cost_model, sizing

REPO = Path(__file__).resolve().parents[1]
PAPER = cost_model.load_config(REPO / "config" / "paper.yaml")


def test_no_job_of_the_paper_config_exceeds_the_partition_limit():
    """Every job of config/paper.yaml, training included, fits cluster.max_runtime with the safety factor: no job
    relies on being resubmitted, and no evaluation would be killed."""
    c = sizing.cluster(PAPER)
    sized = sizing.size(PAPER)
    assert len(sized) == sum(cost_model.job_counts(PAPER).values())
    over = [(k, s.wall_h) for k, s in sized.items() if s.wall_h * 60 * c["safety_factor"] > c["max_runtime"]]
    assert not over, over
    assert all(s.fits and s.submissions == 1 for s in sized.values())
    assert sizing.problems(PAPER, sized) == []
    # one source: the paper config writes no runtime of its own, every limit is the cost model's
    assert {s.source for s in sized.values()} == {"model"}
    assert c["max_runtime"] == conf.default("cluster", "max_runtime")


def test_the_paper_config_fits_a_24h_partition_because_of_shards():
    """On a 24 h partition every evaluation-type job fits one submission: the Imagenette AutoAttack evaluations
    (4 archs x 2 settings; VGG-16-BN: 20 h estimated) run as 2 shards of <= 10.2 h (x 1.5 = 15.3 h); unsharded, they would not."""
    cfg = copy.deepcopy(PAPER)
    cfg["cluster"] = {"max_runtime": 1440}
    sized = sizing.size(cfg)
    assert sizing.problems(cfg, sized) == []
    evaluations = [s for s in sized.values() if s.job.rule not in cost_model.RESUMABLE]
    assert evaluations and all(s.fits and s.needed_min <= 1440 for s in evaluations)
    aa = [s.job.name for s in sized.values() if s.job.rule == "evaluate_autoattack" and s.job.dataset == "imagenette"]
    assert len(aa) == 16 and all(name.endswith(("/autoattack-s0of2", "/autoattack-s1of2")) for name in aa)
    del cfg["datasets"]["imagenette"]["autoattack"]["shards"]
    found = sizing.problems(cfg, sizing.size(cfg))
    assert len(found) == 2 and all("evaluate_autoattack imagenette/vgg16_bn" in p for p in found)
    assert "datasets.imagenette.autoattack.shards = 2 or more" in found[0]


def test_runtime_is_the_estimate_times_the_safety_factor():
    sized = sizing.size(PAPER)
    c = sizing.cluster(PAPER)
    for s in sized.values():
        expected = max(c["min_runtime"], math.ceil(s.job.seconds / s.gpus / 60 * c["safety_factor"]))
        assert s.runtime == s.needed_min == expected, s
    # the 8-GPU ImageNet pretraining is sized by its wall-clock time, 1/8 of its GPU-hours
    pre = [s for s in sized.values() if (s.job.rule, s.job.dataset) == ("pretrain", "imagenet")]
    assert pre and all(s.gpus == 8 and s.wall_h == pytest.approx(s.job.seconds / 8 / 3600) for s in pre)
    doubled = copy.deepcopy(PAPER)
    doubled["cluster"] = {"safety_factor": 3.0}
    aa = [k for k in sized if k[0] == "evaluate_autoattack" and sized[k].needed_min > c["min_runtime"]]
    assert len(aa) > 10
    for k in aa:
        assert sizing.size(doubled)[k].needed_min == pytest.approx(2 * sized[k].needed_min, abs=1)


def test_limits_explicit_runtimes_and_cpu_configs():
    cfg = copy.deepcopy(PAPER)
    cfg["cluster"] = {"max_runtime": 1440}  # a 24 h partition
    sized = sizing.size(cfg)
    # training over the limit asks for the limit and resumes over several submissions: not a problem
    retrain = [s for s in sized.values() if s.job.dataset == "imagenet" and s.job.rule == "retrain" and not s.fits]
    assert retrain and all(s.runtime == 1440 and s.submissions == 2 for s in retrain)
    # an evaluation cannot resume: one over the limit is named, with the keys to change (an 8 h partition: the
    # ImageNet Fig. 7 job, 12.9 h x 1.5; the Imagenette VGG-16 AutoAttack shards, 10.2 h x 1.5)
    short = copy.deepcopy(cfg)
    short["cluster"] = {"max_runtime": 480}
    found = sizing.problems(short, sizing.size(short))
    assert any(p.startswith("reinit imagenet/resnet50") and "analyses.reinit.eval.n" in p for p in found)
    aa = [p for p in found if p.startswith("evaluate_autoattack imagenette/vgg16_bn/seed0/adversarial/autoattack-s")]
    assert aa and "cluster.max_runtime = 480" in aa[0] and "datasets.imagenette.autoattack.shards = 4 or more" in aa[0]
    # an explicit runtime wins, and one above the limit is named by its key
    cfg["datasets"]["cifar10"]["resources"]["evaluate"]["runtime"] = 2000
    sized = sizing.size(cfg)
    cifar = [s for s in sized.values() if s.job.dataset == "cifar10" and s.job.rule == "evaluate"]
    assert {s.source for s in cifar} == {"config"} and {s.runtime for s in cifar} == {1440}
    assert any("datasets.cifar10.resources.evaluate.runtime = 2000 exceeds" in p for p in sizing.problems(cfg, sized))
    # on a CPU the GPU model does not apply
    cfg["device"] = "cpu"
    assert {s.runtime for s in sizing.size(cfg).values() if s.source == "cpu"} == {conf.default("cluster", "cpu_runtime")}


def test_measured_throughput_file_sizes_the_jobs(tmp_path):
    rates = tmp_path / "throughput.yaml"
    rates.write_text(yaml.safe_dump({"imagenette": {"vgg16_bn": cost_model.THROUGHPUT["imagenette"]["vgg16_bn"] * 4}}))
    cfg = copy.deepcopy(PAPER)
    cfg["cluster"] = {"throughput": str(rates)}
    key = next(k for k in sizing.size(PAPER) if k[0] == "evaluate_autoattack" and "vgg16_bn" in k[1]
               and k[1].startswith("imagenette"))
    assert sizing.size(cfg)[key].wall_h == pytest.approx(sizing.size(PAPER)[key].wall_h / 4)
    cfg["cluster"] = {"throughput": str(tmp_path / "missing.yaml")}
    with pytest.raises(ConfigError, match=r"cluster.throughput = .*missing.yaml' does not exist"):
        sizing.size(cfg)


def test_sizing_the_dag_imports_no_torch_and_is_quick():
    code = ("import sys, time; t = time.perf_counter(); from advlayers.tools import sizing, cost_model; "
            f"r = sizing.Runtimes(cost_model.load_config({str(REPO / 'config' / 'paper.yaml')!r})); "
            "r.of('evaluate', {'dataset': 'cifar10', 'arch': 'resnet18', 'seed': '0', 'pretraining': 'adversarial', "
            "'unit': 'pretrained'}); assert 'torch' not in sys.modules; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 20, out.stdout  # ~1.3 s on the 2-core CI machine (the grid's expansion)


def test_a_job_over_the_partition_limit_warns_in_a_dry_run_and_stops_a_real_run(repo_copy, tmp_path):
    """On an 8 h partition the shards of the Imagenette VGG-16 AutoAttack evaluations (10.2 h x 1.5) cannot fit:
    the dry run lists the jobs (the shards and their merges) and names them; a real run stops before its first job
    (onstart); training jobs ask for the limit."""
    from helpers import snakemake

    (tmp_path / "partition.yaml").write_text("cluster: {max_runtime: 480}\n")
    args = ("all_figures", "--configfile", "config/paper.yaml", str(tmp_path / "partition.yaml"))
    rc, out = snakemake(repo_copy, "-n", *args, "--cores", "128", check=False)
    assert rc == 0, out[-3000:]
    # the 8-GPU ImageNet pretraining asks for 8 cores per GPU (its DataLoader workers), the other jobs for 8
    threads = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"log: logs/pretrain/(\S+)\.log\n(?:.*\n)*?\s*threads: (\d+)", out)}
    assert threads["imagenet/resnet50/seed0/conventional"] == 64 and threads["cifar10/resnet18/seed0/adversarial"] == 8
    assert out.count("job too long for the partition: evaluate_autoattack imagenette/vgg16_bn") == 4, out[-3000:]
    assert out.count("autoattack.shards = 4 or more") == 4 and "rule merge_shards:" in out
    assert "runtime=480" in out and not any(int(m) > 480 for m in re.findall(r"runtime=(\d+)", out))
    rc, out = snakemake(repo_copy, *args, "--cores", "1", check=False)
    assert rc != 0 and "job too long for the partition" in out and "cluster.max_runtime = 480" in out, out[-3000:]
    assert not (repo_copy / "results" / "data").exists()
