#!/usr/bin/env python
"""Would `torch.func` batching (stack_module_state + vmap) train K demo nets faster than K plain steps? Side by side.

    python benchmarks/vmap_training.py            # this CPU's kernels and the AVX2-capped ones, K = 2 and 4
    python benchmarks/vmap_training.py --quick    # one K, few repeats (the smoke test)

Issue 19 names two ways to train the cells of a setting as one batched model: grouped convolutions
(benchmarks/fused_training.py: 0.61-0.95x, slower) and `torch.func.stack_module_state` + `vmap`. This times the
second on its most favourable case: K narrow ResNet-18s (width 0.25, 32 px, batch 64, fp32, 1 thread), every
BatchNorm in eval mode (as the frozen modules run; train-mode BatchNorm updates running statistics in place, which
vmap refuses), one forward + backward of the cross-entropy each. alone = K plain steps one after another; vmap =
one `vmap(grad(loss))` over the stacked weights, all members reading the same batch (the cells of one net share
data order). The vmap gradients are checked against the alone ones before timing. Ratio = alone / vmap CPU-s
(> 1: batching pays); medians of interleaved repeats, CPU-seconds (`time.process_time`) beside wall.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
BATCH = 64


def measure(k: int, repeats: int) -> dict:
    """Median CPU and wall seconds of K alone steps and of one vmap step (this process's kernels)."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, stack_module_state, vmap

    from advlayers.core.models import build_model

    torch.set_num_threads(1)
    nets = [build_model("resnet18", 10, 32, seed=s, width=0.25).eval() for s in range(k)]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(BATCH, 3, 32, 32, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen)
    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

    batched = vmap(grad(loss), in_dims=(0, 0, None, None))

    def alone():
        for net in nets:
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()

    alone()
    grads = batched(params, buffers, x, y)
    worst = max(float((grads[name][i] - p.grad).abs().max()) for i, net in enumerate(nets)
                for name, p in net.named_parameters())
    if worst > 1e-4:
        raise SystemExit(f"vmap gradients differ from the alone ones by {worst:.2e}: not the same computation")
    times = {"alone": ([], []), "vmap": ([], [])}
    for _ in range(repeats):
        for name, step in (("alone", alone), ("vmap", lambda: batched(params, buffers, x, y))):
            c, w = time.process_time(), time.perf_counter()
            step()
            times[name][0].append(time.process_time() - c)
            times[name][1].append(time.perf_counter() - w)
    return {"k": k, "max_grad_diff": worst,
            **{f"{n}_{kind}": statistics.median(v[i]) for n, v in times.items() for i, kind in enumerate(("cpu", "wall"))}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="K = 2, 2 repeats, this CPU's kernels only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps([measure(k, args.repeats) for k in args.ks]))
        return
    ks, repeats, isas = ([2], 2, ["native"]) if args.quick else (args.ks, args.repeats, ["native", "avx2"])
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "CPU") if Path("/proc/cpuinfo").exists() else "CPU"
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {model}, "
          f"1 thread, fp32, batch {BATCH}, narrow ResNet-18 (width 0.25, 32 px), BatchNorm in eval mode\n")
    print("| ISA | K | alone CPU-s (wall) | vmap CPU-s (wall) | alone / vmap (CPU-s) |\n|---|---:|---:|---:|---:|")
    for isa in isas:
        env = {**os.environ, **(AVX2_ENV if isa == "avx2" else {})}
        out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(repeats), "--ks", *map(str, ks)],
                             env=env, capture_output=True, text=True, check=True).stdout
        for r in json.loads(out.splitlines()[-1]):
            print(f"| {isa} | {r['k']} | {r['alone_cpu']:.3f} ({r['alone_wall']:.3f}) | {r['vmap_cpu']:.3f} "
                  f"({r['vmap_wall']:.3f}) | {r['alone_cpu'] / r['vmap_cpu']:.2f}x |")


if __name__ == "__main__":
    main()
