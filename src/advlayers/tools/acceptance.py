"""The one-GPU acceptance run: every CUDA path the paper run takes, and this GPU's training throughput, in one
process and at most 8 minutes, before anything is submitted to a cluster (docs/cluster.md, "Step 1").

    python -m advlayers.tools.acceptance --device cuda --out acceptance/       (advlayers acceptance ...)
    advlayers cost --configfile config/paper.yaml --throughput acceptance/throughput.yaml
    python -m advlayers.tools.acceptance --device cpu --quick --out /tmp/acc    the CI version (tests/test_acceptance.py)

Everything runs through the library's own training and attack code (`core.training.train` on synthetic
in-memory data of each dataset's image size and classes, `core.attacks`, `core.autoattack`), each part timed and
ok / NOT OK / skipped in acceptance.md:

* throughput: per arch and dataset stage (32 px = CIFAR-10, 224 px = Imagenette and ImageNet), the steady-state
  images/s of conventional training in fp32 and with `precision: auto` (bf16 autocast + channels_last on a GPU
  that computes bf16 natively), and of adversarial training with the dataset's recipe attack (PGD-7 at 32 px,
  FGSM-RS at 224 px); the first batches (warm-up, cuDNN autotuning) are not timed. throughput.yaml holds the
  `auto` rate in the cost model's fp32 reference units (divided by its bf16 speed-up, which `cost` multiplies
  back), so `advlayers cost --throughput` reproduces the measured time; acceptance.md shows the measured bf16
  speed-up and adversarial cost per image beside the model's;
* compile: `recipe.compile` (torch.compile of the training forward and the training attack; CUDA only);
* DDP: a one-process NCCL (gloo on CPU) group, the training run wrapped in DistributedDataParallel with
  SyncBatchNorm as the multi-GPU pretraining is (`core.distributed`; the cross-rank all-reduce needs 2 GPUs:
  the cluster preflight and tests/test_distributed.py cover it);
* evaluation: PGD (the evaluation attack, fp32) and AutoAttack (`core.autoattack`) on a few test images of a
  briefly trained net: robust accuracy never above clean.

Not covered: data loading from JPEG files (benchmarks/input_pipeline.py), several GPUs, SLURM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import yaml

from . import cost_model

BUDGET_S = 480  # the whole run on one GPU
SIZES = {"cifar10": (32, 10), "imagenet": (224, 1000)}  # dataset stage -> (image size, classes)
STAGE_OF = {"cifar10": "cifar10", "imagenette": "imagenet", "imagenet": "imagenet"}  # throughput.yaml entries
ARCHS = ("resnet18", "resnet50", "vgg11_bn", "vgg16_bn")
OK, NOT_OK, SKIPPED = "ok", "NOT OK", "skipped"


@dataclasses.dataclass
class Plan:
    """The sizes of one acceptance run."""

    device: str = "cuda"
    archs: tuple[str, ...] = ARCHS
    stages: tuple[str, ...] = tuple(SIZES)
    width: float = 1.0
    batch: dict = dataclasses.field(default_factory=lambda: {"cifar10": 128, "imagenet": 128})
    warmup: int = 3
    steps: int = 8
    eval_images: int = 64

    @classmethod
    def quick(cls, device: str = "cpu") -> Plan:
        """The CI size: one narrow arch, both stages, a few batches of 4."""
        return cls(device, ("resnet18",), tuple(SIZES), 0.125, {"cifar10": 8, "imagenet": 4}, 1, 2, 4)


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _split(n: int, size: int, classes: int, seed: int = 0):
    import torch

    from ..core.splits import TensorSplit

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return TensorSplit(x, torch.randint(0, classes, (n,), generator=g))


def timed_training(plan: Plan, stage: str, arch: str, mode: str, **overrides) -> dict:
    """Train `arch` on synthetic data of `stage` for warmup + steps batches; steady-state images/s."""
    from ..core.models import build_model
    from ..core.recipes import get_recipe
    from ..core.training import train

    size, classes = SIZES[stage]
    batch = plan.batch[stage]
    recipe = get_recipe(stage, epochs=1, batch_size=batch, schedule="constant", **overrides)
    model = build_model(arch, classes, size, seed=0, width=plan.width)
    stamps = []

    def on_batch_end(epoch, done, net):
        _sync(plan.device)
        stamps.append(time.perf_counter())

    split = _split(batch * (plan.warmup + plan.steps), size, classes)
    t0 = time.perf_counter()
    result = train(model, split, recipe, mode=mode, seed=0, device=plan.device, progress=False,
                   on_batch_end=on_batch_end, handle_signals=False)
    timed = stamps[-1] - stamps[plan.warmup - 1] if plan.warmup else stamps[-1] - t0
    return {"images_s": batch * plan.steps / timed, "precision": result.precision,
            "channels_last": result.channels_last, "seconds": time.perf_counter() - t0, "model": result.model}


def throughput_part(plan: Plan) -> tuple[list[dict], dict]:
    """Rows per (stage, arch): fp32, auto and adversarial rates; the throughput.yaml table."""
    rows, table = [], {}
    for stage in plan.stages:
        for arch in plan.archs:
            fp32 = timed_training(plan, stage, arch, "conventional", precision="fp32")
            auto = timed_training(plan, stage, arch, "conventional", precision="auto")
            adv = timed_training(plan, stage, arch, "adversarial", precision="auto", include_clean=False)
            recipe = cost_model.get_recipe(stage)
            units = cost_model.train_units(dataclasses.replace(recipe, include_clean=False), "adversarial")
            speedup = cost_model.AMP_SPEEDUP if auto["precision"] == "bf16" else 1.0
            rows.append({"stage": stage, "arch": arch, "fp32": fp32["images_s"], "auto": auto["images_s"],
                         "precision": auto["precision"], "channels_last": auto["channels_last"],
                         "adversarial": adv["images_s"], "units": units, "model_speedup": speedup,
                         "seconds": fp32["seconds"] + auto["seconds"] + adv["seconds"]})
            # cost multiplies `auto` recipes by AMP_SPEEDUP: divide it out so that cost gives the measured time
            reference = auto["images_s"] / cost_model.AMP_SPEEDUP * plan.width ** 2
            for dataset, of in STAGE_OF.items():
                if of == stage:
                    table.setdefault(dataset, {})[arch] = float(f"{reference:.4g}")
    return rows, table


@contextlib.contextmanager
def one_process_group(device: str):
    """A process group of one rank (NCCL on CUDA, gloo on CPU) in which `train` takes its DDP path."""
    import torch.distributed as dist

    from ..core import distributed

    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    dist.init_process_group(distributed.default_backend(device), init_method="env://", rank=0, world_size=1)
    original = distributed.is_distributed
    distributed.is_distributed = distributed.is_initialized  # world size 1, the multi-process code path
    try:
        yield
    finally:
        distributed.is_distributed = original
        dist.destroy_process_group()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def paths_part(plan: Plan) -> list[dict]:
    """compile and DDP: a few training steps each, through `train`."""
    stage, arch = plan.stages[0], plan.archs[0]
    out = []
    if str(plan.device).startswith("cuda"):
        run = timed_training(plan, stage, arch, "adversarial", compile=True)
        out.append({"path": f"torch.compile ({arch}, {stage}, adversarial)", "status": OK,
                    "detail": f"{run['images_s']:,.0f} images/s after warm-up", "seconds": run["seconds"]})
    else:
        out.append({"path": "torch.compile", "status": SKIPPED, "detail": "CUDA only (core.training)", "seconds": 0.0})
    t0 = time.perf_counter()
    with one_process_group(plan.device):
        run = timed_training(plan, stage, arch, "conventional")
    sync_bn = str(plan.device).startswith("cuda")
    out.append({"path": f"DDP, one process ({'NCCL, SyncBatchNorm' if sync_bn else 'gloo'})", "status": OK,
                "detail": f"{run['images_s']:,.0f} images/s", "seconds": time.perf_counter() - t0})
    return out


def evaluation_part(plan: Plan, model, stage: str) -> list[dict]:
    """PGD (the evaluation attack) and AutoAttack on a few synthetic test images: robust <= clean."""
    import torch

    from ..core.attacks import AttackSpec
    from ..core.autoattack import AutoAttackSpec

    size, classes = SIZES[stage]
    split = _split(plan.eval_images, size, classes, seed=1)
    x, y = split.x.to(plan.device).float().div_(255), split.y.to(plan.device)
    model = model.to(plan.device).eval()
    eps = 8 / 255
    out = []
    for name, spec in [("PGD-10", AttackSpec(eps=eps, step_size=eps / 4, steps=10)),
                       ("AutoAttack standard", AutoAttackSpec(eps=eps, n_classes=classes))]:
        t0 = time.perf_counter()
        clean, robust = spec.robust_correct(model, x, y, generator=torch.Generator().manual_seed(0))  # CPU draws
        _sync(plan.device)
        ok = bool((robust <= clean).all()) and robust.shape == y.shape
        out.append({"path": f"{name} ({plan.archs[0]}, {stage}, {len(y)} images)", "status": OK if ok else NOT_OK,
                    "detail": f"clean {int(clean.sum())}, robust {int(robust.sum())}",
                    "seconds": time.perf_counter() - t0})
    return out


def precision_status(plan: Plan, rows: list[dict]) -> dict:
    """bf16 autocast + channels_last: what `auto` resolved to; NOT OK on a CUDA GPU that computes bf16 natively
    when it stayed fp32 (on a CPU it is reported only: ADVLAYERS_PRECISION may force fp32 there)."""
    from ..core.recipes import bf16_native

    got = sorted({(r["precision"], r["channels_last"]) for r in rows})
    must = str(plan.device).startswith("cuda") and bf16_native(plan.device)
    ok = got == [("bf16", True)] if must else len(got) == 1
    detail = ", ".join(f"{p}{' + channels_last' if c else ''}" for p, c in got)
    return {"path": "precision auto (bf16 autocast, channels_last)", "status": OK if ok else NOT_OK,
            "detail": detail + (" (bf16 + channels_last required on this GPU)" if must else ""), "seconds": 0.0}


def run(plan: Plan) -> tuple[str, dict, bool]:
    """The acceptance run: (acceptance.md, the throughput table, all ok)."""
    import torch

    t0 = time.perf_counter()
    rows, table = throughput_part(plan)
    checks = [precision_status(plan, rows)]
    checks += paths_part(plan)
    model = timed_training(plan, plan.stages[0], plan.archs[0], "conventional")["model"]
    checks += evaluation_part(plan, model, plan.stages[0])
    total = time.perf_counter() - t0
    on_gpu = str(plan.device).startswith("cuda")
    checks.append({"path": f"whole run within {BUDGET_S} s", "status": OK if total <= BUDGET_S or not on_gpu else NOT_OK,
                   "detail": f"{total:.0f} s", "seconds": total})
    device = torch.cuda.get_device_name(plan.device) if on_gpu else "CPU"
    text = report(plan, rows, checks, f"{device}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    return text, table, all(c["status"] != NOT_OK for c in checks)


def report(plan: Plan, rows: list[dict], checks: list[dict], machine: str) -> str:
    lines = [f"# Acceptance run ({machine})", "",
             f"Device {plan.device}, archs {', '.join(plan.archs)}, width {plan.width:g}, batches {plan.batch}, "
             f"{plan.warmup} warm-up + {plan.steps} timed batches per rate (advlayers.tools.acceptance).", "",
             "| check | status | detail | s |", "|---|---|---|---:|"]
    lines += [f"| {c['path']} | {c['status']} | {c['detail']} | {c['seconds']:.1f} |" for c in checks]
    lines += ["", "Training images/s (synthetic data, steady state). `auto / fp32`: the measured speed-up of "
              "`precision: auto` against the cost model's assumed one; `adv. cost`: conventional / adversarial "
              "images/s (the recipe's attack, no clean batch) against the model's units per image.", "",
              "| stage | arch | fp32 | auto | auto / fp32 (model) | adversarial | adv. cost (model) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['arch']} | {r['fp32']:,.1f} | {r['auto']:,.1f} | "
                     f"{r['auto'] / r['fp32']:.2f} ({r['model_speedup']:.2f}) | {r['adversarial']:,.1f} | "
                     f"{r['auto'] / r['adversarial']:.2f} ({r['units']:g}) |")
    lines += ["", "throughput.yaml: the `auto` rate / the cost model's bf16 speed-up x width^2, per dataset "
              "(CIFAR-10 from the 32 px stage, Imagenette and ImageNet from the 224 px one): "
              "`advlayers cost --throughput throughput.yaml` prices the grid with it."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="advlayers acceptance", description="One-GPU acceptance run (at most "
                                     "8 minutes): every CUDA path and this GPU's throughput.yaml for advlayers cost.")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/acceptance.md, DIR/throughput.yaml")
    parser.add_argument("--quick", action="store_true", help="CI size: one narrow arch, batches of 4-8")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, metavar="A", help=f"default: {' '.join(ARCHS)}")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("advlayers acceptance: error: --device cuda but torch sees no CUDA GPU (torch "
                  f"{torch.__version__}); use --device cpu --quick for the CPU version", file=sys.stderr)
            return 2
    plan = Plan.quick(args.device) if args.quick else Plan(args.device)
    if args.archs:
        plan.archs = tuple(args.archs)
    text, table, ok = run(plan)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "acceptance.md").write_text(text)
    (out / "throughput.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    print(text, end="")
    print(f"wrote {out / 'acceptance.md'} and {out / 'throughput.yaml'}" + ("" if ok else "; some checks are NOT OK"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
