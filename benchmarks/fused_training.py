#!/usr/bin/env python
"""Would training the demo's retraining cells as one horizontally fused net pay on a CPU? Measured, side by side.

    python benchmarks/fused_training.py                 # this CPU's kernels and the AVX2-capped ones, fp32
    python benchmarks/fused_training.py --write         # and put the table into benchmarks/results.md

Issue 19 suggests training the K cells of one pretrained net in one process as one batched model (stacked
weights, grouped convolutions: horizontally fused training). The demo's narrow ResNet-18 (width 0.25, 32 px,
batch 64) does not fill one core (../shared/notes/fused-training.md: 368 us/sample at batch 64, 201 at 256), so
fusing could pay - if grouped convolutions run as fast per channel as plain ones.

What is timed (one thread, fp32, interleaved, median of --repeats): one training step of the retraining cells
of the conventional net (FGSM-RS with random start on the predicted label, loss on clean + adversarial images:
the demo's `mnist5k-demo` recipe, Adam) and of the adversarial net (conventional steps), as

  * alone: K separate nets, each with only its cell's units trainable and the rest frozen in eval mode, one step
    each (what the workflow does today, K processes' worth of work in one);
  * fused: one net whose every Conv2d has K x the channels and `groups` x K (member k's weights in slice k),
    every BatchNorm2d K x the features, the Linear head as a grouped 1x1 convolution; the union of the cells'
    units trainable (a fused step cannot skip a layer's weight gradient that any member needs); each member
    reads the same batch (the cells of one net share the seed, hence data order and attack noise).

Ratio = alone seconds / fused seconds (> 1: fusing pays). The fused forward is checked against the K alone
forwards (eval mode) before timing, so the fused net computes what the members compute. Under `--isa avx2` the
child process sees torch's kernels capped at AVX2 (as on a CPU without AVX-512, benchmarks/demo_budget.py).
"""

from __future__ import annotations

import argparse
import copy
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
BEGIN, END = "<!-- fused:begin -->", "<!-- fused:end -->"
# The demo's cells (config/config.yaml): cut-offs before 1, 2, 3, 6 and after 1..4 of each net, as module masks
CELLS = ["m100000", "m110000", "m111000", "m111111", "m011111", "m001111", "m000111", "m000011"]
EPS, BATCH, LR = 0.15, 64, 8e-3


def fuse(models):
    """One net computing K same-architecture nets side by side: input (B, K*3, H, W), logits (B, K*classes)."""
    import torch
    from torch import nn

    from advlayers.core.models import Normalize

    k, fused = len(models), copy.deepcopy(models[0])

    def walk(prefix, module):
        for name, child in list(module._modules.items()):
            full = f"{prefix}.{name}" if prefix else name
            members = [m.get_submodule(full) for m in models]
            if type(child) is nn.Conv2d:
                new = nn.Conv2d(k * child.in_channels, k * child.out_channels, child.kernel_size, child.stride,
                                child.padding, child.dilation, k * child.groups, child.bias is not None)
                new.weight.data = torch.cat([m.weight.data for m in members])
                if child.bias is not None:
                    new.bias.data = torch.cat([m.bias.data for m in members])
            elif type(child) is nn.BatchNorm2d:
                new = nn.BatchNorm2d(k * child.num_features, child.eps, child.momentum)
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new, attr).data = torch.cat([getattr(m, attr).data for m in members])
            elif type(child) is nn.Linear:
                conv = nn.Conv1d(k * child.in_features, k * child.out_features, 1, groups=k)
                conv.weight.data = torch.cat([m.weight.data for m in members]).unsqueeze(-1)
                conv.bias.data = torch.cat([m.bias.data for m in members])
                new = nn.Sequential(nn.Unflatten(1, (k * child.in_features, 1)), conv, nn.Flatten(1))
            elif type(child) is Normalize:
                new = copy.deepcopy(child)
                new.mean, new.std = child.mean.repeat(1, k, 1, 1), child.std.repeat(1, k, 1, 1)
            elif type(child) in (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity):
                continue
            elif child._modules:
                walk(full, child)
                continue
            else:
                raise TypeError(f"cannot fuse {type(child).__name__} ({full})")
            module._modules[name] = new

    walk("", fused)
    return fused


def _members_view(net, k):
    from torch import nn

    class Members(nn.Module):  # (B, 3, H, W) shared or (B, K, 3, H, W) per member -> (B*K, classes)
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            if x.dim() == 4:
                x = x.unsqueeze(1).expand(-1, k, -1, -1, -1)
            b = x.shape[0]
            return self.net(x.reshape(b, -1, *x.shape[-2:])).view(b * k, -1)

    return Members()


def _step(net, x, y, optimizer, adversarial, k, generator):
    """One training step; `k` members read the same batch (k = 1: a plain net)."""
    import torch
    import torch.nn.functional as F

    yk = y.repeat_interleave(k) if k > 1 else y
    if adversarial:
        modes = [(m, m.training) for m in net.modules()]
        net.eval()
        with torch.no_grad():
            target = net(x).argmax(1)
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * EPS  # drawn once: shared by the members
        x_adv = (x + noise).clamp(0, 1)
        if k > 1:
            x_adv = x_adv.unsqueeze(1).expand(-1, k, -1, -1, -1).contiguous()
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(net(x_adv), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        lo = (x - EPS).clamp(0, 1) if k == 1 else (x - EPS).clamp(0, 1).unsqueeze(1)
        hi = (x + EPS).clamp(0, 1) if k == 1 else (x + EPS).clamp(0, 1).unsqueeze(1)
        x_adv = torch.minimum(torch.maximum(x_adv.detach() + 1.25 * EPS * grad.sign(), lo), hi)
        for m, training in modes:
            m.training = training
        xs = x.unsqueeze(1).expand(-1, k, -1, -1, -1) if k > 1 else x
        inputs, labels = torch.cat([xs, x_adv]), torch.cat([yk, yk])
    else:
        inputs, labels = x, yk
    loss = F.cross_entropy(net(inputs), labels) * k  # k means of k members: each member's gradient as alone
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _setup(k, channels_last, seed=0):
    import torch

    from advlayers.core.models import build_model
    from advlayers.core.training import cell_units, freeze_except, set_train_modes

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    base = build_model("resnet18", 10, 32, seed=seed, width=0.25).eval()
    cells = CELLS[:k]
    alone = []
    for cell in cells:
        net = copy.deepcopy(base)
        units = cell_units(net, cell)
        params = freeze_except(net, units)
        set_train_modes(net, units)
        alone.append((net.to(memory_format=memory_format), torch.optim.Adam(params, lr=LR)))
    union = sorted({u for cell in cells for u in cell_units(base, cell)})
    fused = fuse([copy.deepcopy(base) for _ in cells])
    params = freeze_except(fused, union)
    set_train_modes(fused, union)
    fused = fused.to(memory_format=memory_format)
    return base, alone, (_members_view(fused, k), torch.optim.Adam(params, lr=LR)), union


def _check_forward(alone, fused, k):
    import torch

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        modes = [(m, m.training) for n, _ in alone for m in n.modules()] + [(m, m.training) for m in fused.modules()]
        for n, _ in alone:
            n.eval()
        fused.eval()
        want = torch.stack([n(x) for n, _ in alone], 1).reshape(8 * k, -1)
        got = fused(x)
        for m, training in modes:
            m.training = training
    return float((want - got).abs().max())


def measure(k, channels_last, repeats):
    import torch

    torch.set_num_threads(1)
    _, alone, (fused, fused_opt), union = _setup(k, channels_last)
    diff = _check_forward(alone, fused, k)
    if diff > 1e-3:
        raise RuntimeError(f"the fused net does not compute its members (max |difference| {diff:.2e})")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 3, 32, 32, generator=g).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    rows = []
    for adversarial in (True, False):
        def run_alone():
            for net, opt in alone:
                _step(net, x, y, opt, adversarial, 1, g)

        def run_fused():
            _step(fused, x, y, fused_opt, adversarial, k, g)

        run_alone(), run_fused()  # warm-up (oneDNN primitive caches)
        timings = {"alone": [], "fused": []}
        cpu = {"alone": [], "fused": []}
        for _ in range(repeats):
            for name, fn in (("alone", run_alone), ("fused", run_fused)):
                t, c = time.perf_counter(), time.process_time()
                fn()
                timings[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        a, f = statistics.median(timings["alone"]), statistics.median(timings["fused"])
        rows.append({"k": k, "channels_last": channels_last,
                     "step": "adversarial (FGSM-RS)" if adversarial else "conventional",
                     "alone_s": a, "fused_s": f, "alone_cpu_s": statistics.median(cpu["alone"]),
                     "fused_cpu_s": statistics.median(cpu["fused"]), "ratio": a / f, "forward_diff": diff,
                     "union": ",".join(union)})
    return rows


def _child(isa, ks, repeats):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(AVX2_ENV if isa == "avx2" else {})}
    out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(repeats), *[f"--k={k}" for k in ks]],
                         env=env, check=True, capture_output=True, text=True).stdout
    return [dict(json.loads(line), isa=isa) for line in out.splitlines() if line.startswith("{")]


def _markdown(rows, cpu):
    out = [BEGIN, "## Horizontally fused retraining (filled by `python benchmarks/fused_training.py --write`)", "",
           f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu}, 1 thread, fp32, batch {BATCH}, "
           f"narrow ResNet-18 (width 0.25, 32 px), the demo's cells of one net ({', '.join(CELLS)}, first K). "
           "alone = K separate nets, each with only its cell trainable, one step each; fused = one grouped net, "
           "the union of the cells' units trainable. Medians, interleaved; ratio > 1 means fusing pays.", "",
           "| ISA | layout | K | step | alone s (CPU-s) | fused s (CPU-s) | alone / fused |",
           "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['isa']} | {'channels_last' if r['channels_last'] else 'contiguous'} | {r['k']} | {r['step']} "
                   f"| {r['alone_s']:.3f} ({r['alone_cpu_s']:.3f}) | {r['fused_s']:.3f} ({r['fused_cpu_s']:.3f}) "
                   f"| **{r['ratio']:.2f}x** |")
    out += ["", f"Fused forward vs the members' forwards: max |difference| {max(r['forward_diff'] for r in rows):.1e}.",
            END]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, action="append", help="members per fused net (repeatable; default 4 and 8)")
    p.add_argument("--isa", choices=["native", "avx2", "both"], default="both")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", action="store_true", help="put the table into benchmarks/results.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ks = args.k or [4, 8]
    if args.child:
        for k in ks:
            for channels_last in (False, True):
                for row in measure(k, channels_last, args.repeats):
                    print(json.dumps(row), flush=True)
        return
    rows = []
    for isa in (["native", "avx2"] if args.isa == "both" else [args.isa]):
        rows += _child(isa, ks, args.repeats)
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True,
                         text=True).stdout.strip() or "unknown CPU"
    md = _markdown(rows, cpu)
    print(md)
    if args.write:
        path = HERE / "results.md"
        text = path.read_text()
        if BEGIN in text:
            text = text[:text.index(BEGIN)] + md + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + md + "\n"
        path.write_text(text)


if __name__ == "__main__":
    main()
