"""What the tests share besides fixtures (conftest.py): the repository's paths, tiny recipes and nets, and
running the workflow on a copy of the repository (`copy_repo`, `snakemake`, `dry_run`, `copy_of`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from advlayers.core.recipes import get_recipe
from advlayers.tools.sources import copy_workflow

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))  # CI: 2 idle cores

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny.yaml"
TARGETS = ("all_figures",)
WIDTH = 0.25  # narrow nets keep unit tests fast; the layer structure is the paper's


def tiny_recipe(**overrides):
    base = dict(epochs=1, batch_size=64, train_subset=256, eps=0.1, step_size=0.04, steps=2, attack="pgd",
                precision="fp32", lr=1e-3)
    base.update(overrides)
    return get_recipe("mnist5k-demo", **base)


def small_net(seed=0):
    """A six-module net without BatchNorm (so per-rank batches cannot change the result): DDP and preemption
    tests compare runs bit for bit on it."""
    from torch import nn

    from advlayers.core.models import ModelSpec, ModularNet, Normalize

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = [
            nn.Sequential(Normalize(), nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            nn.Identity(),
            nn.Identity(),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 10)),
        ]
    return ModularNet(modules, ModelSpec("resnet18", 10, 32))


# --------------------------------------------------------------------------- the workflow


def snakemake(cwd, *args, check=True, timeout=900, env=None):
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-5000:]}")
    return proc.returncode, out


def dry_run(cwd, *args):
    """{rule: [outputs]} of the jobs a dry run would execute ({} when there is nothing to do)."""
    _, out = snakemake(cwd, "-n", *args)
    if "Nothing to be done" in out:
        return {}
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.strip().startswith("output:"):
            jobs[rule] += [p.strip() for p in line.split(":", 1)[1].split(",")]
    assert jobs, f"could not parse the dry run:\n{out[-3000:]}"
    return jobs


def copy_repo(dst: Path) -> Path:
    """The workflow's files (not tests, not results) copied to `dst`, plus tests/tiny.yaml as tiny.yaml."""
    copy_workflow(REPO, dst)
    shutil.copy2(TINY, dst / "tiny.yaml")
    return dst


def fake_paper_roots(root: Path) -> None:
    """Empty files and folders in the layouts config/paper.yaml's dataset roots expect (dry runs only)."""
    cifar = root / "data" / "cifar10" / "cifar-10-batches-py"
    cifar.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).touch()
    for ds in ("imagenette", "imagenet"):
        for split in ("train", "val"):
            (root / "data" / ds / split).mkdir(parents=True, exist_ok=True)


def copy_of(run: Path, dst: Path) -> Path:
    """A copy of a repository copy with its results and Snakemake metadata (to damage without side effects)."""
    shutil.copytree(run, dst, symlinks=True)
    return dst
