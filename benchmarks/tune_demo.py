#!/usr/bin/env python
"""Sizing the demo's retraining by the retraining controls, on TUNING images only (docs/claims-v2.md).

    python benchmarks/tune_demo.py --seeds 0 1 2 --setting epochs=2 --setting epochs=3 --setting epochs=4 \
        --setting epochs=2,lr=0.008 --setting epochs=2,batch_size=128,channels_last=true

For each training seed the conventional and the adversarial MNIST-5k ResNet-18 (the demo's width, recipe and
`recipe_overrides` read from config/config.yaml, fp32, one thread as a demo job) are pretrained once (cached under
benchmarks/_work/tune/). For every retraining setting (fields of `advlayers.core.recipes.Recipe` on top of the
demo's recipe and pretraining overrides, as the config's `retrain_overrides`), the control cell m111111 (cut-off
`before 6`: every module redrawn and retrained) of each net is retrained in the opposite mode, timed, and
evaluated with the demo's configured evaluation attack (`eval` of config/config.yaml: since the APGD evaluation,
PGD-10 then APGD-CE-100 and APGD-DLR-100 on the survivors; `--attack pgd` gives the PGD-10 of the first tuning)
on the tuning images (`split.subset(500, seed=0)` of the test split, the images every v1 result used; never the
confirmation images):

    A = (rob(conventional net, m111111 retrained adversarially) - rob(conventional net)) / G
    B = (rob(adversarial net) - rob(adversarial net, m111111 retrained conventionally)) / G
    G = rob(adversarial net) - rob(conventional net)

Every measurement is appended to benchmarks/_work/tune/results.jsonl as soon as it is made (a rerun skips what
is there); `--table` prints the markdown table of benchmarks/results.md from that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
WORK = HERE / "_work" / "tune"
RESULTS = WORK / "results.jsonl"
TUNING = {"n": 500, "seed": 0}  # the tuning part of MNIST-5k's test split
BAR = 0.8
ATTACK_KIND = "apgd"  # set by --attack: the config's eval attack, or its PGD alone (the first tuning's)


def demo() -> dict:
    """The demo's MNIST-5k settings, from config/config.yaml (the one place they live)."""
    import yaml

    return yaml.safe_load((HERE.parent / "config" / "config.yaml").read_text())["datasets"]["mnist5k"]


def pretrain_overrides() -> dict:
    return {**demo()["recipe_overrides"], "precision": "fp32"}


def parse_setting(text: str) -> dict:
    """'epochs=3,lr=0.008,channels_last=true' -> {'epochs': 3, 'lr': 0.008, 'channels_last': True}."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        low = value.lower()
        out[key] = True if low == "true" else False if low == "false" else (
            int(value) if value.lstrip("-").isdigit() else float(value))
    return out


def setting_name(setting: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(setting.items()))


def attack_name() -> str:
    from advlayers.core.evaluation import attack_from_settings

    return attack_from_settings({**demo()["eval"], "attack": ATTACK_KIND}).name


def pretraining() -> str:
    """The demo's pretraining (recipe, overrides, width) as recorded in every row: A and B combine a pretrained
    net's G with controls retrained from that same net, never from a net of an earlier config."""
    return f"recipe={demo()['recipe']},width={demo()['width']},{setting_name(pretrain_overrides())}"


def done() -> dict:
    """{(seed, setting, net): row} measured under the current attack (rows without `attack` were PGD-10's) from
    the current pretraining (rows that do not record theirs are not used)."""
    found, name, current = {}, attack_name(), pretraining()
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            r = json.loads(line)
            if r.get("attack", "PGD-10") == name and r.get("pretraining") == current:
                found[(r["seed"], r["setting"], r["net"])] = r
    return found


def record(row: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    row = {**row, "pretraining": pretraining()}
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def robust(model, data) -> dict:
    from advlayers.core.evaluation import attack_from_settings, evaluate

    attack = attack_from_settings({**demo()["eval"], "attack": ATTACK_KIND})
    r = evaluate(model, data.test.subset(TUNING["n"], seed=TUNING["seed"]), attack, n=None, seed=TUNING["seed"],
                 progress=False)
    return {"attack": attack.name, "clean_acc": r["clean_acc"], "robust_acc": r["robust_acc"],
            "n_eval": r["n_eval"], "eval_seconds": r["seconds"]}


def pretrained(seed: int, mode: str, data, found: dict):
    import torch

    from advlayers.core.models import build_model
    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import pretrain

    width, overrides = demo()["width"], pretrain_overrides()
    path = WORK / f"seed{seed}_{mode}_{setting_name(overrides)}.pt"
    if path.exists():
        model = build_model("resnet18", data.info.num_classes, data.info.image_size, width=width)
        model.load_state_dict(torch.load(path, weights_only=True))
        if (seed, "pretrained", mode) not in found:  # evaluated under another attack before
            record({"seed": seed, "setting": "pretrained", "net": mode, **robust(model, data)})
        return model.eval()
    recipe = get_recipe(demo()["recipe"], **overrides)
    t0 = time.perf_counter()
    result = pretrain("resnet18", data, recipe, mode=mode, seed=seed, progress=False, width=width)
    seconds = time.perf_counter() - t0
    WORK.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), path)
    record({"seed": seed, "setting": "pretrained", "net": mode, "seconds": seconds,
            "samples": recipe.epochs * len(data.train), **robust(result.model, data)})
    return result.model.eval()


def control(seed: int, setting: dict, net: str, model, data) -> None:
    import copy

    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import cell_units, retrain

    recipe = get_recipe(demo()["recipe"], **{**pretrain_overrides(), **setting})
    mode = "adversarial" if net == "conventional" else "conventional"
    model = copy.deepcopy(model)
    t0 = time.perf_counter()
    result = retrain(model, data, recipe, units=cell_units(model, "m111111"), mode=mode, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    record({"seed": seed, "setting": setting_name(setting), "net": net, "seconds": seconds,
            "samples": recipe.epochs * (len(data.train) // recipe.batch_size) * recipe.batch_size,
            **robust(result.model, data)})


def table(rows: dict) -> str:
    """Markdown: per setting and seed, G, A, B and the retraining seconds; then per setting the worst A, B."""
    lines = ["| retraining setting | seed | G | A | B | s per control cell (adv. / conv. retraining) | "
             "us per sample (adv.) |", "|---|---:|---:|---:|---:|---:|---:|"]
    settings = sorted({s for (_, s, _) in rows if s != "pretrained"})
    summary = []
    for s in settings:
        a_all, b_all, secs = [], [], []
        for seed in sorted({k[0] for k in rows}):
            try:
                conv, adv = rows[(seed, "pretrained", "conventional")], rows[(seed, "pretrained", "adversarial")]
                ra, rb = rows[(seed, s, "conventional")], rows[(seed, s, "adversarial")]
            except KeyError:
                continue
            g = adv["robust_acc"] - conv["robust_acc"]
            a = (ra["robust_acc"] - conv["robust_acc"]) / g
            b = (adv["robust_acc"] - rb["robust_acc"]) / g
            a_all.append(a), b_all.append(b), secs.append(ra["seconds"] + rb["seconds"])
            lines.append(f"| {s} | {seed} | {g:.3f} | {a:.2f} | {b:.2f} | {ra['seconds']:.0f} / {rb['seconds']:.0f} | "
                         f"{1e6 * ra['seconds'] / ra['samples']:.0f} |")
        if a_all:
            summary.append(f"| {s} | {len(a_all)} | {min(a_all):.2f} | {min(b_all):.2f} | "
                           f"{'yes' if min(a_all) >= BAR and min(b_all) >= BAR else 'no'} | "
                           f"{statistics.mean(secs):.0f} |")
    lines += ["", "| retraining setting | seeds | min A | min B | both >= 0.8 on every seed | "
              "mean s for both control cells |", "|---|---:|---:|---:|---|---:|", *summary]
    return "\n".join(lines)


SPEED_CONFIGS = {"batch 64": {"batch_size": 64}, "batch 64, channels_last": {"batch_size": 64, "channels_last": True},
                 "batch 128": {"batch_size": 128}, "batch 128, channels_last": {"batch_size": 128, "channels_last": True}}


def speed(data, repeats: int = 3, images: int = 1280) -> dict:
    """Microseconds per training sample of adversarial retraining of m111111 (one epoch on `images` training
    images, fp32) in each of SPEED_CONFIGS, interleaved `repeats` times (A B C D A B C D ...), median of each:
    ratios measured side by side survive a loaded machine better than absolute times."""
    import copy

    from advlayers.core.models import build_model
    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import cell_units, retrain

    net = build_model("resnet18", data.info.num_classes, data.info.image_size, seed=0, width=0.25)
    times = {name: [] for name in SPEED_CONFIGS}
    for _ in range(repeats):
        for name, overrides in SPEED_CONFIGS.items():
            recipe = get_recipe("mnist5k-demo", epochs=1, precision="fp32", train_subset=images, **overrides)
            model = copy.deepcopy(net)
            t0 = time.perf_counter()
            retrain(model, data, recipe, units=cell_units(model, "m111111"), mode="adversarial", seed=0,
                    progress=False)
            times[name].append(1e6 * (time.perf_counter() - t0) / (images // recipe.batch_size * recipe.batch_size))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--setting", action="append", default=[], help="retraining overrides, e.g. epochs=3,lr=0.008")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attack", choices=["apgd", "pgd"], default="apgd",
                   help="evaluate with the config's eval attack (apgd) or only its PGD (the first tuning's)")
    p.add_argument("--table", action="store_true", help="print the table of what was measured, and stop")
    p.add_argument("--speed", action="store_true", help="time adversarial retraining per sample (batch 64/128, "
                   "channels_last or not, fp32), interleaved, and stop")
    args = p.parse_args(argv)
    global ATTACK_KIND
    ATTACK_KIND = args.attack
    if args.table:
        print(table(done()))
        return
    import torch

    from advlayers.core.datasets import load_dataset

    torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k")
    if args.speed:
        result = speed(data)
        base = result["batch 64"]
        for name, us in result.items():
            print(f"| {name} | {us:.0f} | {base / us:.2f}x |")
        return
    settings = [parse_setting(s) for s in args.setting] or [{"epochs": 2}]
    for seed in args.seeds:
        found = done()
        nets = {mode: pretrained(seed, mode, data, found) for mode in ("conventional", "adversarial")}
        for setting in settings:
            for net, model in nets.items():
                if (seed, setting_name(setting), net) not in done():
                    control(seed, setting, net, model, data)
    print(table(done()))


if __name__ == "__main__":
    main()
