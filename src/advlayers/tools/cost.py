"""`advlayers cost`: GPU-hours of a workflow config per dataset, arch and rule, each job's time limit, or
--measure a device's training throughput.

    advlayers cost --configfile config/paper.yaml                   the table
    advlayers cost --configfile config/paper.yaml --throughput my_gpu.yaml
    advlayers cost --measure --device cuda --out my_gpu.yaml        measure your GPU's throughputs

The model (what a job costs, the reference throughputs and where they come from) is `advlayers.tools.cost_model`;
each job's time limit (the estimate times `cluster.safety_factor`, within the partition's `cluster.max_runtime`)
is `advlayers.tools.sizing`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..grid import layout
from ..grid import vocabulary as vocab
from . import sizing
from .cost_model import (  # noqa: F401  (the model's names, as `advlayers.tools.cost` always offered them)
    AMP_SPEEDUP, AUTOATTACK_UNITS, DEFAULT_CONFIG, FORWARD_FRACTION, IMAGE_SIZE, NUM_CLASSES, REFERENCE_GPU,
    RESUMABLE, RULES, SPLIT_SIZES, THROUGHPUT, CostModelError, Job, eval_units, get_recipe, job_counts, jobs,
    layer_count, load_config, load_throughput, throughput, train_units, _speed)


def summary(config: dict, table: dict | None = None) -> list[dict]:
    """One row per (dataset, arch, rule): jobs, GPU-hours, the longest job's wall-clock, its time limit and the
    submissions it needs (`advlayers.tools.sizing`: the runtime the workflow asks for).

    GPU-hours are single-GPU equivalents; a job with g GPUs (datasets.<name>.resources.pretrain.gpu) is assumed
    to take 1/g of the wall-clock time. Training jobs longer than their limit continue over `submissions`
    submissions (resume from results/.state); evaluation-type jobs do not resume: `submissions` is then "TOO LONG".
    `shards`: the jobs each evaluation is split into (`datasets.<d>.autoattack.shards`; 1: not split).
    """
    rows: dict[tuple, dict] = {}
    for s in sizing.size(config, table).values():
        job = s.job
        row = rows.setdefault((job.dataset, job.arch, job.rule), {
            "dataset": job.dataset, "arch": job.arch, "rule": job.rule, "jobs": 0, "gpu_hours": 0.0,
            "longest_job_h": 0.0, "gpus": s.gpus, "limit_h": 0.0, "submissions": 1, "shards": 1})
        shard = layout.unit_shard(job.name)  # a shard job's name ends in its unit, '<unit>-s<i>of<k>'
        row["shards"] = max(row["shards"], shard[2] if shard else 1)
        row["jobs"] += 1
        row["gpu_hours"] += job.seconds / 3600
        row["longest_job_h"] = max(row["longest_job_h"], s.wall_h)
        row["limit_h"] = max(row["limit_h"], s.runtime / 60)
        if s.submissions > 1 and row["submissions"] != "TOO LONG":
            row["submissions"] = max(row["submissions"], s.submissions) if job.rule in RESUMABLE else "TOO LONG"
    return list(rows.values())


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:.2f}" if h >= 0.01 else f"{h:.4f}"


def format_table(rows: list[dict], cluster: dict | None = None) -> str:
    lines = [f"Estimated GPU-hours ({REFERENCE_GPU} reference throughputs; see `advlayers cost --help`)"]
    if cluster:
        lines.append(f"Time limit per job (`limit h`, what the workflow asks for): the longest job x safety factor "
                     f"{cluster['safety_factor']:g}, at least {cluster['min_runtime']} min, at most the partition's "
                     f"{cluster['max_runtime']} min (config `cluster`; explicit `resources.<stage>.runtime` wins)")
    lines += [
        "",
        "| dataset | arch | rule | jobs | shards | GPUs/job | GPU-h | longest job h | limit h | submissions |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['arch']} | {r['rule']} | {r['jobs']} | {r['shards']} | {r['gpus']} | {_hours(r['gpu_hours'])} | "
                     f"{_hours(r['longest_job_h'])} | {_hours(r['limit_h'])} | {r['submissions']} |")
    lines += ["", "| rule | jobs | GPU-h |", "|---|---:|---:|"]
    for rule in RULES:
        sel = [r for r in rows if r["rule"] == rule]
        lines.append(f"| {rule} | {sum(r['jobs'] for r in sel)} | {_hours(sum(r['gpu_hours'] for r in sel))} |")
    lines.append(f"| **total** | {sum(r['jobs'] for r in rows)} | {_hours(sum(r['gpu_hours'] for r in rows))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- measuring a device


def measure(datasets=None, archs=None, device: str = "cuda", steps: int = 10, warmup: int = 3,
            batch_size: int | None = None, precision: str = "fp32") -> dict[str, dict[str, float]]:
    """Clean-training images/s (forward + backward + Adam step, synthetic data) of each (dataset, arch)."""
    import time

    import torch

    from ..core.models import build_model
    from ..grid.vocabulary import ARCHS

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
    parser = argparse.ArgumentParser(
        prog="advlayers cost", description="Estimated GPU-hours of a workflow config (the model: `pydoc "
        "advlayers.tools.cost_model`), or --measure this device's training throughput.")
    parser.add_argument("--configfile", default=str(DEFAULT_CONFIG), help="workflow config (default: the "
                        "checkout's config/paper.yaml)")
    parser.add_argument("--throughput", metavar="FILE", help="YAML {dataset: {arch: images/s}} (e.g. from --measure)")
    parser.add_argument("--measure", action="store_true", help="time training on --device, print a throughput YAML")
    measure_group = parser.add_argument_group("with --measure")
    measure_group.add_argument("--device", default="cuda")
    measure_group.add_argument("--datasets", nargs="+", metavar="D")
    measure_group.add_argument("--archs", nargs="+", metavar="A")
    measure_group.add_argument("--steps", type=int, default=10, metavar="N", help="timed steps (10)")
    measure_group.add_argument("--batch-size", type=int, metavar="B", help="128 at 32 px, 256 at 224 px")
    measure_group.add_argument("--out", metavar="FILE", help="write the YAML here")
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
        table = load_throughput(args.throughput or sizing.cluster(config).get("throughput"))
        print(format_table(summary(config, table), sizing.cluster(config)))
        for line in sizing.problems(config, sizing.size(config, table)):
            print(f"TOO LONG: {line}")
    except (CostModelError, vocab.ConfigError, OSError, yaml.YAMLError) as e:
        print(f"advlayers cost: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
