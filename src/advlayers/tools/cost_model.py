"""GPU-hours of a workflow config: pretraining, the retraining grid and the evaluation, per dataset and arch.

The model behind `advlayers cost` (the table, advlayers.tools.cost) and the jobs' time limits (advlayers.tools.sizing,
read by the workflow when it builds the DAG: this module imports no torch).

The grid (datasets, archs, seeds, cells, batches, the recipes' epochs/attacks/precision, the evaluation's
steps, restarts and n) is `advlayers.grid`'s expansion of the config, the one the Snakefile uses
(tests/test_cost.py checks the job counts per rule against `snakemake -n`).

Cost model (single-GPU-equivalent hours, one job = one checkpoint or one evaluation)
-------------------------------------------------------------------------------------
* unit: one clean training step on one image (forward + backward + update), at the rate
  ``THROUGHPUT[dataset][arch]`` images/s of the reference GPU;
* clean (conventional) training epoch: ``train_images`` units (``train_subset`` when set);
* adversarial training epoch: ``train_images * (k + c)`` units: k attack steps (forward + backward to the
  input, PGD-k; FGSM-RS is k = 1) plus the training step on the adversarial batch, doubled when
  ``include_clean`` adds the clean batch (c = 2, else 1). CIFAR's PGD-7 with clean samples: 9x clean.
* retraining: the full cost of an epoch in the retraining mode for every cell of a job (an upper bound:
  conventional retraining of the later modules skips part of the backward pass); each cell is priced once,
  however many figures use it;
* evaluation of one checkpoint: ``n`` test images x (F + restarts * (steps + F)) units, F = 1/3 (a forward pass
  is about a third of a forward + backward); PGD-200 with one restart is about 201 units per image;
* ``eval.attack: apgd``: the PGD above plus 2 x (F + ``apgd_steps``) units (APGD-CE and APGD-DLR on an image
  that survives every stage: an upper bound, images broken by PGD cost nothing more);
* AutoAttack (``datasets.<name>.autoattack``, or ``eval.attack: autoattack``): ``AUTOATTACK_UNITS`` (~3,570)
  units per image and net, the worst case of a point that stays robust through all four attacks;
* the analyses (config ``analyses``): Fig. 5 and Fig. 6 cells are retraining cells (above); Fig. 7 is one job
  per (dataset, seed, pretraining) doing ``1 + 2 x layers x BatchNorm policies`` evaluations; Fig. 8 feature
  sampling is one PGD attack on ``n_images``; the CPU-only embeddings are left out;
* a narrower net (``width`` w) trains ``1 / w^2`` times faster (convolution FLOPs scale with w^2);
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

The enumeration is `advlayers.grid`'s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.recipes import get_recipe
from ..grid import conf, layout, plan, sharding, validate
from ..grid import vocabulary as vocab
from ..grid.vocabulary import ConfigError

REFERENCE_GPU = "1x A100 80GB, fp32/TF32"
AMP_SPEEDUP = 2470 / 938  # NVIDIA's ResNet-50 v1.5 mixed-precision / TF32 throughput on one A100
FORWARD_FRACTION = 1 / 3  # forward pass / (forward + backward)
# AutoAttack "standard" on an image that stays robust: APGD-CE 100 + APGD-T 9 x 100 + FAB-T 9 x 100 steps and
# Square's 5,000 forward queries (~5000/3 units): an upper bound, images broken early cost far less.
AUTOATTACK_UNITS = 100 + 900 + 900 + 5000 * FORWARD_FRACTION
EVAL_ATTACKS = ("pgd", "autoattack", "apgd")  # config eval.attack (grid/config.schema.yaml)

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
# (train, test) images of the datasets' splits (advlayers.core.datasets; Imagenette = imagenette2).
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "mnist5k": (4000, 1000),
    "digits": (1437, 360),
    "cifar10": (50000, 10000),
    "imagenette": (9469, 3925),
    "imagenet": (1281167, 50000),
}
IMAGE_SIZE = {"mnist5k": 32, "digits": 32, "cifar10": 32, "imagenette": 224, "imagenet": 224}
NUM_CLASSES = {"mnist5k": 10, "digits": 10, "cifar10": 10, "imagenette": 10, "imagenet": 1000}

RULES = plan.GPU_RULES
RESUMABLE = plan.RESUMABLE_RULES  # training resumes from results/.state


class CostModelError(ValueError):
    """A config the cost model cannot price (an arch or dataset without a reference throughput)."""


@dataclass(frozen=True)
class Job:
    """One training or evaluation job of the grid and its estimated single-GPU seconds."""

    rule: str
    dataset: str
    arch: str
    name: str
    seconds: float
    unpriced: str = ""  # why the model could not price it (seconds is then NaN)


# --------------------------------------------------------------------------- config


DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "config" / "paper.yaml"


def load_config(path) -> dict:
    """The config as the workflow reads it (schema, defaults, cross-references; the datasets need not be there
    to price them)."""
    try:
        return validate.load(path, roots=False)
    except ConfigError as e:
        raise CostModelError(str(e).removeprefix("config error: ")) from None


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


def eval_units(steps: int, restarts: int, attack: str = "pgd", apgd_steps: int = 100) -> float:
    """Units per image of one evaluation: PGD (`pgd`), that PGD + APGD-CE + APGD-DLR (`apgd`, an image that
    survives every stage: each APGD run one forward pass + `apgd_steps` steps), AutoAttack (`autoattack`)."""
    if attack not in EVAL_ATTACKS:
        raise CostModelError(f"unknown evaluation attack {attack!r}; valid choices: {', '.join(EVAL_ATTACKS)}")
    if attack == "autoattack":
        return FORWARD_FRACTION + AUTOATTACK_UNITS
    pgd = FORWARD_FRACTION + restarts * (steps + FORWARD_FRACTION)
    return pgd + (2 * (FORWARD_FRACTION + apgd_steps) if attack == "apgd" else 0.0)


def _speed(recipe) -> float:
    # precision "auto" resolves to bf16 on the reference A100 (compute capability 8.0)
    return AMP_SPEEDUP if recipe.precision in ("bf16", "auto") else 1.0


def layer_count(arch: str) -> int:
    """Conv/linear layers of an arch (advlayers.core.models.layers), what layer-wise analyses iterate over."""
    return vocab.LAYER_COUNTS[arch]


def _recipe(config: dict, dataset: str, retrain: bool):
    params = conf.recipe_params(config, dataset, retrain)
    return get_recipe(params["name"], **params["overrides"])


class _Estimator:
    """Single-GPU seconds of one job of a config (`jobs`); a CostModelError where it has no throughput."""

    def __init__(self, config: dict, table: dict):
        self.config, self.table, self.groups = config, table, plan.groups(config)

    def sizes(self, dataset):
        if dataset not in SPLIT_SIZES:
            raise CostModelError(f"unknown dataset {dataset!r} (known: {', '.join(SPLIT_SIZES)})")
        return SPLIT_SIZES[dataset]

    def rate(self, dataset, arch):
        return throughput(self.table, dataset, arch) / conf.width(self.config, dataset) ** 2

    def train_seconds(self, dataset, arch, recipe, mode):
        """The epochs' training steps and, with config eval_each_epoch, their held-out evaluations (fp32 PGD)."""
        n_train = self.sizes(dataset)[0]
        images = min(recipe.train_subset or n_train, n_train)
        seconds = recipe.epochs * images * train_units(recipe, mode) / (self.rate(dataset, arch) * _speed(recipe))
        held_out = conf.epoch_eval_settings(self.config, dataset)
        return seconds + (recipe.epochs * self.eval_seconds(dataset, arch, held_out) if held_out else 0.0)

    def eval_seconds(self, dataset, arch, ev, evaluations=1):
        part = vocab.part_size(dataset, ev.get("images") or "confirmation", self.sizes(dataset)[1])  # eval.images
        n = min(ev.get("n") or part, part)
        units = eval_units(ev.get("steps") or 0, ev.get("restarts", 1), ev.get("attack", "pgd"),
                           ev.get("apgd_steps", 100))
        return evaluations * n * units / self.rate(dataset, arch)

    def __call__(self, rule, s, unit) -> float:
        config = self.config
        if rule == "pretrain":
            recipe = dataclasses.replace(_recipe(config, s.dataset, False), include_clean=False)  # Madry: no clean
            return self.train_seconds(s.dataset, s.arch, recipe, s.pretraining)
        elif rule == "retrain":
            recipe = _recipe(config, s.dataset, True)
            return len(self.groups[s][unit]) * self.train_seconds(s.dataset, s.arch, recipe, s.retraining)
        elif rule == "evaluate":
            nets = len(plan.evaluation_cells(config, s, unit))
            return self.eval_seconds(s.dataset, s.arch, conf.eval_settings(config, s.dataset), nets)
        elif rule == "evaluate_autoattack":
            aa = conf.autoattack_eval_settings(config, s.dataset)
            part = vocab.part_size(s.dataset, aa["images"], self.sizes(s.dataset)[1])
            n = min(aa["n"] or part, part)
            shard = layout.unit_shard(unit)
            if shard is not None:  # one shard's slice of the n images
                start, stop = sharding.shard_bounds(n, aa["batch_size"], shard[1], shard[2])
                n = stop - start
            return len(plan.autoattack_cells(config, s)) * n * AUTOATTACK_UNITS / self.rate(s.dataset, s.arch)
        elif rule == "reinit":
            a = conf.analysis(config, "reinit")
            policies = len(a.get("bn_policies") or vocab.BN_POLICIES)
            return self.eval_seconds(s.dataset, s.arch, conf.eval_settings(config, s.dataset, "reinit"),
                                     1 + 2 * layer_count(s.arch) * policies)
        else:  # sample_features: the attack on n_images test images (vector sampling is negligible)
            a = conf.analysis(config, "features")
            ev = {**conf.eval_settings(config, s.dataset, "features"), "n": a["n_images"], "attack": "pgd"}  # its PGD
            return self.eval_seconds(s.dataset, s.arch, ev)


def jobs(config: dict, table: dict | None = None, *, strict: bool = True) -> list[Job]:
    """Every GPU job of the config (`plan.gpu_jobs`, the Snakefile's enumeration), with single-GPU seconds. A job
    the model cannot price (an own dataset or arch without a reference throughput) is a CostModelError, or with
    `strict=False` a Job with seconds NaN and the reason in `unpriced`."""
    estimate = _Estimator(config, THROUGHPUT if table is None else table)
    out: list[Job] = []
    for rule, s, unit in plan.gpu_jobs(config):
        try:
            seconds, unpriced = estimate(rule, s, unit), ""
        except CostModelError as e:  # an own dataset or arch without a reference throughput
            if strict:
                raise
            seconds, unpriced = math.nan, str(e)
        name = layout.job_name(rule, s, group=unit, unit=unit)
        out.append(Job(rule, s.dataset, s.arch, name, seconds, unpriced))
    return out


def job_counts(config: dict) -> dict[str, int]:
    """Jobs per rule (`RULES`), whatever the throughputs."""
    return plan.job_counts(config)
