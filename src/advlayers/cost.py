"""GPU-hours of a workflow config: pretraining, the retraining grid and the evaluation, per dataset and arch.

    python -m advlayers.cost --configfile config/paper.yaml                   the table below
    python -m advlayers.cost --configfile config/paper.yaml --throughput my_gpu.yaml
    python -m advlayers.cost --measure --device cuda --out my_gpu.yaml        measure your GPU's throughputs

The grid (datasets, archs, cut-offs, the recipes' epochs/attacks/precision, the evaluation's steps, restarts
and n) is read from the config file itself and `advlayers.training.get_recipe`, with the enumeration the
Snakefile uses (tests/test_cost.py checks the job counts against `snakemake -n`).

Cost model (single-GPU-equivalent hours, one job = one checkpoint or one evaluation)
-------------------------------------------------------------------------------------
* unit: one clean training step on one image (forward + backward + update), at the rate
  ``THROUGHPUT[dataset][arch]`` images/s of the reference GPU;
* clean (conventional) training epoch: ``train_images`` units (``train_subset`` when set);
* adversarial training epoch: ``train_images * (k + c)`` units: k attack steps (forward + backward to the
  input, PGD-k; FGSM-RS is k = 1) plus the training step on the adversarial batch, doubled when
  ``include_clean`` adds the clean batch (c = 2, else 1). CIFAR's PGD-7 with clean samples: 9x clean.
* retraining: the full cost of an epoch in the retraining mode (an upper bound: conventional retraining of the
  later modules skips part of the backward pass); cut-offs that retrain nothing (before 0, after 6) cost 0;
* evaluation of one checkpoint: ``n`` test images x (F + restarts * (steps + F)) units, F = 1/3 (a forward pass
  is about a third of a forward + backward); PGD-200 with one restart is about 201 units per image;
* the analyses (config ``analyses``): Fig. 5 per-layer and Fig. 6 module-subset retraining are priced like
  retraining (adversarial, the analysis's ``retrain_overrides`` applied) and evaluated once per checkpoint with
  the analysis's ``eval`` overrides; Fig. 7 re-initialisation is one job per (dataset, pretraining) doing
  ``1 + 2 x layers`` evaluations; Fig. 8 feature sampling is one PGD attack on ``n_images``; the CPU-only
  embeddings are left out;
* a ``precision: bf16`` recipe runs ``AMP_SPEEDUP`` times faster than the fp32 (TF32) reference;
* a job with g GPUs (``datasets.<name>.resources.pretrain.gpu``) takes 1/g of the wall-clock time (the
  GPU-hours stay the same); jobs longer than their rule's time limit are flagged: training resumes over
  several submissions, evaluation-type jobs (evaluate, reinit, sample_features) do not.

Reference throughputs (``THROUGHPUT``; assumptions, not measurements on the paper's hardware)
---------------------------------------------------------------------------------------------
Anchor: NVIDIA DeepLearningExamples, ResNet-50 v1.5 for PyTorch (PyTorch/Classification/ConvNets/
resnet50v1.5/README.md, "Training performance: NVIDIA DGX A100 (8x A100 80GB)", pytorch-21.03 NGC): one
A100 80GB trains ResNet-50 at 224 px with 938 images/s in TF32 and 2470 images/s with mixed precision.
The paper's recipes train in fp32 (TF32 on an A100), so 938 images/s is the ResNet-50/ImageNet entry; the
training FLOPs of this package's models (torch.utils.flop_counter, forward + backward, per image) scale it:

    GFLOP/image   resnet18  resnet50  vgg11_bn  vgg16_bn
    224 px           10.65     24.30     44.88     92.04   (Imagenette is trained at 224 px too)
     32 px           0.217     0.496     1.027     1.989   (torchvision's ImageNet stems on 32 px images)

* 224 px: 938 x 24.30 / GFLOP (compute-bound): resnet18 2140, vgg11_bn 508, vgg16_bn 248 images/s;
* 32 px: half that FLOP rate (small feature maps use the GPU worse), capped where eager PyTorch's per-layer
  kernel launches dominate (~5 ms per step for a ResNet-18, ~15 ms for a ResNet-50, batch 128): resnet18
  20000, resnet50 8000, vgg11_bn 11000, vgg16_bn 5700 images/s. These are the least certain entries (about
  2x either way); they matter little next to the 224 px ones.
* Relative arch costs measured on this repository's 2-core CPU at 32 px (batch 32, forward + backward):
  resnet18 1 : resnet50 2.9 : vgg11_bn 4.1 : vgg16_bn 7.8, close to the FLOP ratios 1 : 2.3 : 4.7 : 9.2.

Replace the table with your own numbers: ``--measure`` times a few training steps of every (dataset, arch)
on a device and writes a YAML of images/s (``{dataset: {arch: images_per_s}}``); ``--throughput FILE``
reads such a file (entries not in it keep the defaults).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .training import get_recipe

REFERENCE_GPU = "1x A100 80GB, fp32/TF32"
AMP_SPEEDUP = 2470 / 938  # NVIDIA's ResNet-50 v1.5 mixed-precision / TF32 throughput on one A100
FORWARD_FRACTION = 1 / 3  # forward pass / (forward + backward)

# Clean-training images/s on the reference GPU (see the module docstring for the derivation).
_SMALL = {"resnet18": 20000.0, "resnet50": 8000.0, "vgg11_bn": 11000.0, "vgg16_bn": 5700.0}
_LARGE = {"resnet18": 2140.0, "resnet50": 938.0, "vgg11_bn": 508.0, "vgg16_bn": 248.0}
THROUGHPUT: dict[str, dict[str, float]] = {
    "mnist5k": dict(_SMALL),
    "digits": dict(_SMALL),
    "cifar10": dict(_SMALL),
    "imagenette": dict(_LARGE),
    "imagenet": dict(_LARGE),
}
# (train, test) images of the datasets' splits (advlayers.datasets; Imagenette = imagenette2).
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "mnist5k": (4000, 1000),
    "digits": (1437, 360),
    "cifar10": (50000, 10000),
    "imagenette": (9469, 3925),
    "imagenet": (1281167, 50000),
}
IMAGE_SIZE = {"mnist5k": 32, "digits": 32, "cifar10": 32, "imagenette": 224, "imagenet": 224}
NUM_CLASSES = {"mnist5k": 10, "digits": 10, "cifar10": 10, "imagenette": 10, "imagenet": 1000}

STAGES = ("pretrain", "retrain", "retrain_layers", "retrain_subset", "evaluate", "reinit", "sample_features")
RESUMABLE = ("pretrain", "retrain", "retrain_layers", "retrain_subset")  # training resumes from results/.state
PRETRAININGS = ("conventional", "adversarial")
DIRECTIONS = ("before", "after")
NUM_MODULES = 6


class CostModelError(ValueError):
    """A config the cost model cannot price (an arch or dataset without a reference throughput)."""


@dataclass(frozen=True)
class Job:
    """One training or evaluation job of the grid and its estimated single-GPU seconds."""

    stage: str
    dataset: str
    arch: str
    name: str
    seconds: float


# --------------------------------------------------------------------------- config


def load_config(path) -> dict:
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict) or "datasets" not in config or "cutoffs" not in config:
        raise CostModelError(f"{path}: not a workflow config (needs 'datasets' and 'cutoffs')")
    return config


def _recipe(dcfg: dict, retrain: bool):
    overrides = dict(dcfg.get("recipe_overrides") or {})
    if retrain:
        overrides.update(dcfg.get("retrain_overrides") or {})
    return get_recipe(dcfg["recipe"], **overrides)


def throughput(table: dict, dataset: str, arch: str) -> float:
    if dataset not in table:
        raise CostModelError(f"no reference throughput for dataset {dataset!r} (known: {', '.join(sorted(table))}); "
                             "add it with --throughput FILE")
    if arch not in table[dataset]:
        raise CostModelError(f"no reference throughput for arch {arch!r} on dataset {dataset!r} (known: "
                             f"{', '.join(sorted(table[dataset]))}); add it with --throughput FILE")
    value = table[dataset][arch]
    if not (isinstance(value, (int, float)) and value > 0):
        raise CostModelError(f"throughput of {arch} on {dataset} must be > 0 images/s, got {value!r}")
    return float(value)


def load_throughput(path=None) -> dict[str, dict[str, float]]:
    """The default table, updated with the entries of a YAML file ``{dataset: {arch: images_per_s}}``."""
    table = {ds: dict(archs) for ds, archs in THROUGHPUT.items()}
    if path is not None:
        with open(path) as f:
            extra = yaml.safe_load(f) or {}
        if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
            raise CostModelError(f"{path}: expected {{dataset: {{arch: images_per_s}}}}")
        for ds, archs in extra.items():
            table.setdefault(ds, {}).update(archs)
    return table


# --------------------------------------------------------------------------- the model


def train_units(recipe, mode: str) -> float:
    """Clean-training-step units per training image and epoch."""
    if mode == "conventional":
        return 1.0
    attack_steps = 1 if recipe.attack == "fgsm_rs" else recipe.steps
    return attack_steps + (2 if recipe.include_clean else 1)


def eval_units(steps: int, restarts: int) -> float:
    return FORWARD_FRACTION + restarts * (steps + FORWARD_FRACTION)


def _speed(recipe) -> float:
    return AMP_SPEEDUP if recipe.precision == "bf16" else 1.0


def _retrains_something(direction: str, cutoff: int) -> bool:
    return not ((direction == "before" and cutoff == 0) or (direction == "after" and cutoff == NUM_MODULES))


def _eval_cfg(dcfg: dict, analysis_cfg: dict | None = None) -> dict:
    """The dataset's evaluation settings with an analysis's `eval` overrides on top (as the Snakefile does)."""
    ev = dict(dcfg["eval"])
    ev.update((analysis_cfg or {}).get("eval") or {})
    return ev


def layer_count(arch: str) -> int:
    """Conv/linear layers of an arch (advlayers.models.layers), what layer-wise analyses iterate over."""
    from .models import build_model, layers

    return len(layers(build_model(arch, 10, 32)))


def jobs(config: dict, table: dict | None = None) -> list[Job]:
    """Every GPU job of the config (the Snakefile's enumeration), with single-GPU seconds.

    Stages: pretrain, retrain (cut-off grid, Fig. 2-4), retrain_layers (Fig. 5), retrain_subset (Fig. 6),
    evaluate (one per distinct checkpoint), reinit (Fig. 7: 1 + 2 x layers evaluations per job) and
    sample_features (Fig. 8: the PGD attack on n_images). CPU-only jobs (prepare_data, embeddings) are left out.
    """
    table = THROUGHPUT if table is None else table
    cutoffs = config["cutoffs"]
    analyses = config.get("analyses") or {}
    out: list[Job] = []
    evaluations: dict[tuple, dict] = {}  # (dataset, arch, name) -> eval settings; a checkpoint is evaluated once

    def sizes(dataset):
        if dataset not in SPLIT_SIZES:
            raise CostModelError(f"unknown dataset {dataset!r} (known: {', '.join(SPLIT_SIZES)})")
        return SPLIT_SIZES[dataset]

    def train_seconds(dataset, arch, recipe, mode):
        n_train = sizes(dataset)[0]
        images = min(recipe.train_subset or n_train, n_train)
        return recipe.epochs * images * train_units(recipe, mode) / (throughput(table, dataset, arch) * _speed(recipe))

    def eval_seconds(dataset, arch, ev, evaluations_per_job=1):
        n_test = sizes(dataset)[1]
        n = min(ev.get("n") or n_test, n_test)
        units = eval_units(ev["steps"], ev.get("restarts", 1))
        return evaluations_per_job * n * units / throughput(table, dataset, arch)

    def analysis_recipe(name, dcfg):
        overrides = {**(dcfg.get("recipe_overrides") or {}), **(dcfg.get("retrain_overrides") or {}),
                     **(analyses[name].get("retrain_overrides") or {})}
        return get_recipe(dcfg["recipe"], **overrides)

    # the cut-off experiment (Fig. 2-4)
    for dataset, dcfg in config["datasets"].items():
        pre, re_ = _recipe(dcfg, retrain=False), _recipe(dcfg, retrain=True)
        for arch in dcfg["archs"]:
            for p in PRETRAININGS:
                out.append(Job("pretrain", dataset, arch, f"pretrain_{p}", train_seconds(dataset, arch, pre, p)))
                evaluations[(dataset, arch, f"pretrain_{p}")] = _eval_cfg(dcfg)
            for p in PRETRAININGS:
                mode = "adversarial" if p == "conventional" else "conventional"  # the opposite (paper §3)
                for d in DIRECTIONS:
                    for c in cutoffs[d]:
                        name = f"retrain_{p}_{d}{c}"
                        seconds = train_seconds(dataset, arch, re_, mode) if _retrains_something(d, c) else 0.0
                        out.append(Job("retrain", dataset, arch, name, seconds))
                        evaluations[(dataset, arch, name)] = _eval_cfg(dcfg)

    def pretrained(dataset, arch):
        """The analyses start from the pretrained nets; price their pretraining if the grid does not have it."""
        dcfg = config["datasets"][dataset]
        for p in PRETRAININGS:
            if (dataset, arch, f"pretrain_{p}") not in evaluations:
                out.append(Job("pretrain", dataset, arch, f"pretrain_{p}",
                               train_seconds(dataset, arch, _recipe(dcfg, retrain=False), p)))
                evaluations[(dataset, arch, f"pretrain_{p}")] = _eval_cfg(dcfg)

    # Fig. 5: adversarial retraining of the first c layers of the conventionally pretrained net
    if analyses.get("layer_cutoff"):
        a = analyses["layer_cutoff"]
        dcfg = config["datasets"][a["dataset"]]
        pretrained(a["dataset"], a["arch"])
        for c in a["cutoffs"]:
            name = f"layers_conventional_before{c}"
            seconds = train_seconds(a["dataset"], a["arch"], analysis_recipe("layer_cutoff", dcfg), "adversarial")
            out.append(Job("retrain_layers", a["dataset"], a["arch"], name, seconds if c > 0 else 0.0))
            evaluations[(a["dataset"], a["arch"], name)] = _eval_cfg(dcfg, a)
    # Fig. 6: adversarial retraining of every subset of modules (bitmask m0..m5)
    if analyses.get("combinations"):
        a = analyses["combinations"]
        dcfg = config["datasets"][a["dataset"]]
        pretrained(a["dataset"], a["arch"])
        masks = a.get("subsets") or ["".join("1" if m >> i & 1 else "0" for i in range(NUM_MODULES))
                                     for m in range(2**NUM_MODULES)]
        for mask in masks:
            name = f"subset_conventional_{mask}"
            seconds = train_seconds(a["dataset"], a["arch"], analysis_recipe("combinations", dcfg), "adversarial")
            out.append(Job("retrain_subset", a["dataset"], a["arch"], name, seconds if "1" in mask else 0.0))
            evaluations[(a["dataset"], a["arch"], name)] = _eval_cfg(dcfg, a)

    for (dataset, arch, name), ev in evaluations.items():
        out.append(Job("evaluate", dataset, arch, name, eval_seconds(dataset, arch, ev)))

    # Fig. 7: every layer re-initialised and re-randomised (plus the original net), evaluated, per pretraining
    if analyses.get("reinit"):
        a = analyses["reinit"]
        per_job = 1 + 2 * layer_count(a["arch"])
        for dataset in a["datasets"]:
            pretrained(dataset, a["arch"])
            ev = _eval_cfg(config["datasets"][dataset], a)
            for p in PRETRAININGS:
                out.append(Job("reinit", dataset, a["arch"], f"reinit_{p}", eval_seconds(dataset, a["arch"], ev, per_job)))
    # Fig. 8: the PGD attack on n_images test images of each pretrained net (vector sampling is negligible)
    if analyses.get("features"):
        a = analyses["features"]
        pretrained(a["dataset"], a["arch"])
        ev = {**_eval_cfg(config["datasets"][a["dataset"]]), "n": a["n_images"]}
        for p in PRETRAININGS:
            out.append(Job("sample_features", a["dataset"], a["arch"], f"features_{p}",
                           eval_seconds(a["dataset"], a["arch"], ev)))
    return out


def job_counts(config: dict) -> dict[str, int]:
    """Jobs per stage (`STAGES`), whatever the throughputs."""
    from .models import ARCHS

    uniform = {ds: dict.fromkeys(ARCHS, 1.0) for ds in SPLIT_SIZES}
    counts = dict.fromkeys(STAGES, 0)
    for job in jobs(config, uniform):
        counts[job.stage] += 1
    return counts


LIMIT_STAGE = {"retrain_layers": "retrain", "retrain_subset": "retrain", "reinit": "evaluate",
               "sample_features": "evaluate"}  # whose config resources (runtime, gpu) a rule uses


def _stage_resource(config, dataset, stage, key, default):
    res = (config["datasets"][dataset].get("resources") or {}).get(LIMIT_STAGE.get(stage, stage)) or {}
    return res.get(key, default)


def summary(config: dict, table: dict | None = None) -> list[dict]:
    """One row per (dataset, arch, stage): jobs, GPU-hours, the longest job's wall-clock and its time limit.

    GPU-hours are single-GPU equivalents; a job with g GPUs (datasets.<name>.resources.pretrain.gpu) is assumed
    to take 1/g of the wall-clock time. Training jobs longer than their limit continue over `submissions`
    submissions (resume from results/.state); evaluation-type jobs do not resume: `submissions` is then "TOO LONG".
    """
    rows: dict[tuple, dict] = {}
    default_gpus = max(1, (config.get("resources") or {}).get("gpu", 1))
    for job in jobs(config, table):
        key = (job.dataset, job.arch, job.stage)
        gpus = max(1, _stage_resource(config, job.dataset, job.stage, "gpu", default_gpus)) if job.stage == "pretrain" \
            else default_gpus
        row = rows.setdefault(key, {"dataset": job.dataset, "arch": job.arch, "stage": job.stage, "jobs": 0,
                                    "gpu_hours": 0.0, "longest_job_h": 0.0, "gpus": gpus})
        row["jobs"] += 1
        row["gpu_hours"] += job.seconds / 3600
        row["longest_job_h"] = max(row["longest_job_h"], job.seconds / 3600 / gpus)
    for row in rows.values():
        row["limit_h"] = _stage_resource(config, row["dataset"], row["stage"], "runtime", 60) / 60
        needed = max(1, math.ceil(row["longest_job_h"] / row["limit_h"]))
        row["submissions"] = needed if row["stage"] in RESUMABLE or needed == 1 else "TOO LONG"
    return list(rows.values())


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:.2f}" if h >= 0.01 else f"{h:.4f}"


def format_table(rows: list[dict]) -> str:
    lines = [
        f"Estimated GPU-hours ({REFERENCE_GPU} reference throughputs; see `python -m advlayers.cost --help`)",
        "",
        "| dataset | arch | stage | jobs | GPUs/job | GPU-h | longest job h | limit h | submissions |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['arch']} | {r['stage']} | {r['jobs']} | {r['gpus']} | {_hours(r['gpu_hours'])} | "
                     f"{_hours(r['longest_job_h'])} | {r['limit_h']:g} | {r['submissions']} |")
    lines += ["", "| stage | jobs | GPU-h |", "|---|---:|---:|"]
    for stage in STAGES:
        sel = [r for r in rows if r["stage"] == stage]
        lines.append(f"| {stage} | {sum(r['jobs'] for r in sel)} | {_hours(sum(r['gpu_hours'] for r in sel))} |")
    lines.append(f"| **total** | {sum(r['jobs'] for r in rows)} | {_hours(sum(r['gpu_hours'] for r in rows))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- measuring a device


def measure(datasets=None, archs=None, device: str = "cuda", steps: int = 10, warmup: int = 3,
            batch_size: int | None = None, precision: str = "fp32") -> dict[str, dict[str, float]]:
    """Clean-training images/s (forward + backward + Adam step, synthetic data) of each (dataset, arch)."""
    import time

    import torch

    from .models import ARCHS, build_model

    datasets = list(datasets or THROUGHPUT)
    archs = list(archs or ARCHS)
    result: dict[str, dict[str, float]] = {}
    done: dict[tuple, float] = {}
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for ds in datasets:
        size, classes = IMAGE_SIZE[ds], NUM_CLASSES[ds]
        bs = batch_size or (256 if size > 32 else 128)
        for arch in archs:
            key = (size, classes, arch, bs)
            if key not in done:
                model = build_model(arch, classes, size, seed=0).to(device).train()
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                x = torch.rand(bs, 3, size, size, device=device)
                y = torch.randint(0, classes, (bs,), device=device)
                dtype = torch.bfloat16 if precision == "bf16" else None
                for i in range(warmup + steps):
                    if i == warmup:
                        sync()
                        t0 = time.perf_counter()
                    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                        loss = torch.nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                sync()
                done[key] = round(steps * bs / (time.perf_counter() - t0), 1)
            result.setdefault(ds, {})[arch] = done[key]
    return result


# --------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlayers.cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/paper.yaml", help="workflow config (default: %(default)s)")
    parser.add_argument("--throughput", metavar="FILE", help="YAML {dataset: {arch: images_per_s}} replacing "
                        "entries of the reference table (e.g. written by --measure)")
    parser.add_argument("--measure", action="store_true", help="measure clean-training images/s on --device and "
                        "print (or --out) a throughput YAML instead of the cost table")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--datasets", nargs="+", help="with --measure: these datasets only")
    parser.add_argument("--archs", nargs="+", help="with --measure: these archs only")
    parser.add_argument("--steps", type=int, default=10, help="with --measure: timed steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, help="with --measure: batch size (default: 128 at 32 px, 256 "
                        "at 224 px)")
    parser.add_argument("--out", help="with --measure: write the YAML here")
    args = parser.parse_args(argv)
    try:
        if args.measure:
            rates = measure(args.datasets, args.archs, device=args.device, steps=args.steps,
                            batch_size=args.batch_size)
            text = yaml.safe_dump(rates, sort_keys=False)
            if args.out:
                Path(args.out).write_text(text)
            print(text, end="")
            return 0
        config = load_config(args.configfile)
        print(format_table(summary(config, load_throughput(args.throughput))))
    except CostModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
