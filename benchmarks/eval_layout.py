#!/usr/bin/env python
"""Evaluation in the channels_last memory layout (config `eval.channels_last`) against the default layout, side by
side on the same net and images.

    python benchmarks/eval_layout.py --workdir /path/to/finished/demo/run [--isa avx2] [--repeats 3]

Reads the adversarially pretrained net of seed 0 of a finished demo run (`--workdir`, the config's first dataset
and arch), and evaluates it on `--n` confirmation images with the demo's evaluation attack (`eval` of the
config; `--apgd-steps` shortens its APGD stages for a quicker measurement) twice per repeat, the two layouts
interleaved (A B A B ...), one thread. Prints wall and CPU seconds per layout (median), the ratio, and whether
the robust outcomes agree image by image. --isa avx2 caps oneDNN/ATen at AVX2 (restarts itself with the
environment variables of benchmarks/demo_budget.py).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a finished demo run (holds results/)")
    p.add_argument("--configfile", default=str(HERE.parent / "config" / "config.yaml"))
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--apgd-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--isa", choices=("native", "avx2"), default="native")
    args = p.parse_args(argv)
    if args.isa == "avx2":
        from demo_budget import AVX2_ENV

        if any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
            os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    import torch

    from advlayers.core.checkpoints import load_checkpoint
    from advlayers.core.datasets import load_prepared
    from advlayers.core.evaluation import attack_from_settings, evaluate
    from advlayers.grid import conf, layout, plan, validate
    from advlayers.jobs.evaluate import eval_images

    torch.set_num_threads(1)
    config = validate.load(args.configfile, roots=False)
    setting = next(s for s in plan.cells(config) if s.seed == 0 and s.pretraining == "adversarial")
    settings = {**conf.eval_settings(config, setting.dataset), "apgd_steps": args.apgd_steps}
    data = load_prepared(Path(args.workdir) / layout.data_path(setting.dataset))
    part = eval_images(data, settings)
    model, _ = load_checkpoint(Path(args.workdir) / plan.net_path(config, setting, "pretrained"),
                               expect={**setting.identity(), "cell": "pretrained"})
    attack = attack_from_settings(settings)
    wall, cpu, outcomes = {False: [], True: []}, {False: [], True: []}, {}
    for _ in range(args.repeats):
        for channels_last in (False, True):
            net = copy.deepcopy(model)
            w0, c0 = time.perf_counter(), time.process_time()
            record = evaluate(net, part, attack, n=args.n, seed=settings["seed"], progress=False, outcomes=True,
                              channels_last=channels_last)
            wall[channels_last].append(time.perf_counter() - w0)
            cpu[channels_last].append(time.process_time() - c0)
            outcomes[channels_last] = record["outcomes"]["robust_correct"]
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in wall}
    differ = int((outcomes[False] != outcomes[True]).sum())
    print(f"{attack.name}, {args.n} confirmation images, {setting.dataset} {setting.arch} adversarial seed 0, "
          f"1 thread, isa {args.isa}, {args.repeats} repeats interleaved (medians)")
    print("| layout | wall s | CPU s | speed-up (wall) |\n|---|---:|---:|---:|")
    for k, name in ((False, "default (contiguous)"), (True, "channels_last")):
        print(f"| {name} | {med[k][0]:.2f} | {med[k][1]:.2f} | {med[False][0] / med[k][0]:.2f}x |")
    print(f"robust outcomes differing between the layouts: {differ} of {args.n}")


if __name__ == "__main__":
    main()
