"""The one-GPU acceptance run (advlayers.tools.acceptance) at CI size on the CPU: every path runs (torch.compile is
CUDA-only and reported as skipped), the report lists each check, and its throughput.yaml is what `advlayers cost
--throughput` reads and prices with. (On a GPU: docs/cluster.md, Step 1; no GPU has run it yet.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advlayers.tools import acceptance, cost_model

REPO = Path(__file__).resolve().parents[1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "advlayers", *args], capture_output=True, text=True, timeout=900,
                          cwd=REPO)


@pytest.mark.slow  # about a minute of CPU
def test_quick_acceptance_run_on_cpu_writes_a_throughput_table_cost_reads(tmp_path):
    proc = _cli("acceptance", "--device", "cpu", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (tmp_path / "acceptance.md").read_text()
    for path in ("precision auto", "torch.compile | skipped", "DDP, one process (gloo) | ok", "PGD-10", "AutoAttack",
                 "whole run within 480 s | ok"):
        assert path in text, path
    assert "NOT OK" not in text
    table = yaml.safe_load((tmp_path / "throughput.yaml").read_text())
    assert set(table) == {"cifar10", "imagenette", "imagenet"}
    assert all(set(v) == {"resnet18"} and v["resnet18"] > 0 for v in table.values())
    assert table["imagenette"] == table["imagenet"]  # both from the 224 px stage
    # advlayers cost prices the paper grid with it: the ResNet-18 jobs get these rates, the other archs keep theirs
    config = cost_model.load_config(REPO / "config" / "paper.yaml")
    measured = cost_model.load_throughput(tmp_path / "throughput.yaml")
    ref = {(j.rule, j.name): j.seconds for j in cost_model.jobs(config)}
    for job in cost_model.jobs(config, measured):
        ratio = cost_model.THROUGHPUT[job.dataset][job.arch] / measured[job.dataset][job.arch]
        assert job.seconds == pytest.approx(ref[(job.rule, job.name)] * ratio)
    proc = _cli("cost", "--configfile", "config/paper.yaml", "--throughput", str(tmp_path / "throughput.yaml"))
    assert proc.returncode == 0 and "| **total** |" in proc.stdout, proc.stderr


def test_cuda_without_a_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = _cli("acceptance", "--device", "cuda", "--out", "unused")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no CUDA GPU" in proc.stderr, proc.stderr
    assert not (REPO / "unused").exists()


def test_full_plan_covers_every_arch_and_stage():
    plan = acceptance.Plan("cuda")
    assert set(plan.archs) == set(cost_model.THROUGHPUT["imagenet"]) and set(plan.stages) == {"cifar10", "imagenet"}
    assert set(acceptance.STAGE_OF) == {"cifar10", "imagenette", "imagenet"}
