#!/usr/bin/env python
"""Input pipeline (issue 22): how many DataLoader workers one GPU needs to stay busy on ImageNet / Imagenette.

    python benchmarks/input_pipeline.py                 ~1-2 CPU-minutes; prints the tables
    python benchmarks/input_pipeline.py --write         and updates its section of benchmarks/results.md
    python benchmarks/input_pipeline.py --quick         smoke version (tests/test_benchmarks_smoke.py)

It writes ImageNet-like JPEGs (500 x 375, quality 90, smooth colour fields with texture, about the bytes per pixel
of ImageNet photos) into benchmarks/_work/jpegs/ (git-ignored) and runs `FolderSplit` - the streamed split the
workflow trains ImageNet and Imagenette with (PIL decode, RandomResizedCrop(224) + flip, ToTensor; evaluation:
Resize(256) + CenterCrop(224)) - with num_workers=0, so that one process does all the work a DataLoader worker
does. Images per CPU-second of that process is the rate of one worker on a core of its own (wall time is printed
beside it: on a shared machine it is the noisier figure). The images/s one GPU consumes in each stage is the cost
model's (`advlayers.tools.cost_model`: reference A100 throughput x the bf16 speed-up of `precision: auto` /
the stage's units per image); their ratio is the workers that GPU needs.

Side by side, the same JPEGs through the decoded-image cache (`advlayers.core.decode_cache`, config
`datasets.<d>.decode: cache`): built once (PIL decode + Resize to the cache size, timed and reported as a one-time
cost per image), then `CacheSplit` - RandomResizedCrop(224) + flip of the memory-mapped uint8 images (evaluation:
the centre crop) - in one process as above. The cache's bytes per image give its size for Imagenette and ImageNet.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "jpegs"
sys.path.insert(0, str(REPO / "src"))

BEGIN, END = "<!-- input_pipeline:begin -->", "<!-- input_pipeline:end -->"
STAGES = ("pretrain", "retrain")


def write_jpegs(folder: Path, n: int, classes: int = 10, size=(500, 375), seed: int = 0) -> float:
    """n JPEGs in ImageFolder layout (folder/c<k>/<i>.JPEG); returns their mean size in KB (written once)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = [folder / f"c{i % classes}" / f"{i:05d}.JPEG" for i in range(n)]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (size[1] // 25 + 1, size[0] // 25 + 1, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), dtype=np.int16)
        texture = rng.normal(0, 12, (size[1], size[0], 1))  # photo-like high frequencies
        image = np.clip(base + texture, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(path, quality=90)
    return sum(p.stat().st_size for p in paths) / n / 1024


def time_split(split, augment: bool, batch_size: int = 32, passes: int = 1) -> dict:
    """`passes` passes over the split in this process (num_workers=0): images, wall s, CPU s of this process."""
    import torch

    gen = torch.Generator().manual_seed(0)
    wall, cpu = time.perf_counter(), time.process_time()
    images = 0
    for _ in range(passes):
        for x, _ in split.batches(batch_size, shuffle=augment, augment=augment, generator=gen):
            images += len(x)
    return {"images": images, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def gpu_rates(config: dict) -> list[dict]:
    """Images/s one reference GPU consumes per (dataset, arch, stage) of the folder datasets in `config`."""
    from advlayers.grid import conf
    from advlayers.tools import cost_model

    rows = []
    for ds, dcfg in config["datasets"].items():
        if ds not in ("imagenette", "imagenet"):
            continue
        ev = conf.eval_settings(config, ds)
        for arch in dcfg["archs"]:
            rate = cost_model.throughput(cost_model.THROUGHPUT, ds, arch) / conf.width(config, ds) ** 2
            for stage in STAGES:
                recipe = cost_model._recipe(config, ds, stage == "retrain")
                if stage == "pretrain":  # Madry: adversarial pretraining adds no clean batch (as cost_model.jobs)
                    recipe = dataclasses.replace(recipe, include_clean=False)
                for mode in ("conventional", "adversarial"):
                    units = cost_model.train_units(recipe, mode)
                    rows.append({"dataset": ds, "arch": arch, "stage": f"{stage} {mode}", "augment": True,
                                 "gpu_images_s": rate * cost_model._speed(recipe) / units})
            units = cost_model.eval_units(ev.get("steps") or 0, ev.get("restarts", 1))
            rows.append({"dataset": ds, "arch": arch, "stage": f"evaluate PGD-{ev.get('steps')}", "augment": False,
                         "gpu_images_s": rate / units})
    return rows


TRAIN, EVAL = "train (RandomResizedCrop + flip)", "eval (Resize + CenterCrop)"
BUILD = "cache build (decode + Resize, once per image)"
PATHS = ("pil", "cache")
# images per split (train, val): Imagenette (imagenette2-320, fast.ai), ImageNet-1k (ILSVRC 2012)
SPLIT_SIZES = {"imagenette": (9_469, 3_925), "imagenet": (1_281_167, 50_000)}


def cache_sizes(bytes_per_image: float) -> list[str]:
    """The cache size of each dataset at the measured bytes per image (the benchmark's 4:3 images)."""
    return [f"{ds}: {train:,} + {val:,} images x {bytes_per_image / 1e3:.0f} KB = "
            f"{(train + val) * bytes_per_image / 1e9:,.1f} GB" for ds, (train, val) in SPLIT_SIZES.items()]


def _rate(r: dict) -> float:
    return r["images"] / r["cpu_s"]


def report(res: dict) -> str:
    per = res["per_worker"]
    lines = [BEGIN, "## Input pipeline: DataLoader workers per GPU (filled by `python benchmarks/input_pipeline.py "
             "--write`)", "",
             f"Run on {res['date']} on `{res['cpu']}` ({res['cores']} cores, shared; load average at start "
             f"{res['load']}), torch {res['torch']}, Pillow {res['pillow']}. {res['n']} synthetic ImageNet-like JPEGs "
             f"(500 x 375, quality 90, mean {res['kb']:.0f} KB) through `FolderSplit` (`pil`: PIL decoding every "
             f"epoch) and through its decoded-image cache (`cache`: decoded once, shorter side {res['cache_size']} px, "
             "uint8, memory-mapped; `CacheSplit`), each with num_workers=0 (one process doing one worker's work; "
             "images per CPU-second = one worker on a core of its own). One run measures both.", "",
             "| path | transform | images | wall s | CPU s | images / wall s | images / CPU s (one worker) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (path, name), r in per.items():
        lines.append(f"| {path} | {name} | {r['images']} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | "
                     f"{r['images'] / r['wall_s']:.0f} | {_rate(r):.0f} |")
    lines += ["", f"The cache holds {res['cache_bytes'] / res['n'] / 1e3:.0f} KB per image (256 x 341 x 3 bytes for "
              "these 4:3 images; 1.143 x the 224 px training size, the evaluation resize); at that size: "
              + "; ".join(cache_sizes(res["cache_bytes"] / res["n"])) + ".", "",
              "Images/s one GPU consumes (the cost model's reference A100 throughput, bf16 for `precision: auto`, "
              "config/paper.yaml's recipes; adversarial = k attack steps + the training step (+ the clean batch in "
              "retraining); `retrain` at the whole net's cost: retraining fewer layers consumes images faster) and the "
              "workers that takes at this CPU's per-worker rate, for each path:", "",
              "| dataset | arch | stage | GPU images/s | workers per GPU (pil) | workers per GPU (cache) |",
              "|---|---|---|---:|---:|---:|"]
    for r in res["gpu"]:
        need = [r["gpu_images_s"] / _rate(per[(path, TRAIN if r["augment"] else EVAL)]) for path in PATHS]
        lines.append(f"| {r['dataset']} | {r['arch']} | {r['stage']} | {r['gpu_images_s']:,.0f} | {need[0]:.1f} | "
                     f"{need[1]:.1f} |")
    lines += ["", END]
    return "\n".join(lines)


def cache_pass(folder: Path, split, size: int) -> tuple[dict, object, int]:
    """Build the split's cache in this process (timed: the one-time cost), then open it; (timing, split, bytes)."""
    import shutil

    from advlayers.core import decode_cache

    where = folder.parent / f"{folder.name}.cache"
    shutil.rmtree(where, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    header = decode_cache.build(split, folder, where, "train", size, num_workers=0)
    timing = {"images": header["n"], "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return timing, decode_cache.open_split(split, folder, where, "train", size), header["data_bytes"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600, help="JPEGs (600; each pass reads all of them)")
    ap.add_argument("--quick", action="store_true", help="32 JPEGs: a smoke run")
    ap.add_argument("--write", action="store_true", help="update the section of benchmarks/results.md")
    ap.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    args = ap.parse_args(argv)
    import PIL
    import torch

    from advlayers.core import decode_cache
    from advlayers.core.splits import FolderSplit
    from advlayers.tools import cost_model

    torch.set_num_threads(1)  # a DataLoader worker runs its transform on one thread
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    n = 32 if args.quick else args.n
    folder = WORK / f"n{n}"
    kb = write_jpegs(folder, n)
    split = FolderSplit.from_folder(folder, num_workers=0)
    size = decode_cache.default_size(split.image_size)
    per = {("pil", TRAIN): time_split(split, True), ("pil", EVAL): time_split(split, False)}
    per[("cache", BUILD)], cached, cache_bytes = cache_pass(folder, split, size)
    passes = 4  # the cache path is ~4x faster: as many CPU-seconds as one pass of the PIL path, less noise
    per[("cache", TRAIN)], per[("cache", EVAL)] = (time_split(cached, a, passes=passes) for a in (True, False))
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    res = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "n": n, "kb": kb,
           "cpu": " ".join(cpu.split(":", 1)[-1].split()) or "unknown", "cores": os.cpu_count(),
           "load": load, "torch": torch.__version__,
           "pillow": PIL.__version__, "per_worker": per,
           "cache_size": size, "cache_bytes": cache_bytes, "gpu": gpu_rates(cost_model.load_config(args.config))}
    text = report(res)
    print(text)
    if args.write:
        path = HERE / "results.md"
        old = path.read_text()
        if BEGIN in old and END in old:  # replaced where it stands
            path.write_text(old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):])
        else:
            path.write_text(old.rstrip("\n") + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
