#!/usr/bin/env python
"""advlayers benchmarks (issue 6): attack throughput, PGD-200 evaluation, adversarial-training cost, memory,
and (with --pipeline) the Snakemake demo's wall time.

    python benchmarks/run.py                  full run (~10-20 min on 2 idle CPU cores), writes benchmarks/results.md
    python benchmarks/run.py --quick          smoke version (< 1 min), used by tests/test_benchmarks_smoke.py
    python benchmarks/run.py --pipeline       also times `snakemake --cores 2 all_figures` in a temporary copy
    python benchmarks/run.py --device cuda    the GPU rows (bf16, channels_last, torch.compile)

Every figure that is compared is a RATIO of two configurations timed side by side in this one process,
interleaved (A B C A B C ...), `--repeats` times, median of each: on a shared machine absolute seconds drift,
ratios measured this way much less. Small models trained for the evaluation rows are cached under
benchmarks/_work/ (git-ignored), with the raw figures (results.json). The report's text: benchmarks/report.py.

The PGD rows compare with torchattacks' `PGD`, which advlayers no longer depends on (its `requests~=2.25.1` pin
held back requests/urllib3/idna): install it for the benchmarks only, without its pins,
`pip install --no-deps torchattacks==3.5.1` (it imports torch, numpy and scipy only).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work"
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from report import pipeline_section, render, write_report  # noqa: E402  (benchmarks/report.py)

from advlayers.core import attacks  # noqa: E402
from advlayers.core.attacks import AttackSpec  # noqa: E402
from advlayers.core.models import build_model  # noqa: E402
from advlayers.tools.sources import copy_workflow  # noqa: E402

ALL_SECTIONS = {"pgd", "profile", "eval", "training", "memory"}

# --------------------------------------------------------------------------- helpers


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(configs: dict, repeats: int, device="cpu", warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, timed in turn (A B C A B C ...) after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in configs.values():
            fn()
    times = {k: [] for k in configs}
    for _ in range(repeats):
        for name, fn in configs.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = "n/a"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    versions = {"torch": torch.__version__}
    for mod in ("torchattacks", "snakemake"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "not installed"
    # torchvision: its version from the metadata, never imported directly
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions["torchvision"] = version("torchvision")
    except PackageNotFoundError:
        versions["torchvision"] = "not installed"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
        "python": platform.python_version(), "load_at_start": load, **versions,
    }


def _legacy_pgd(model, x, y, *, eps, step_size, steps, generator=None, autocast=None):
    """attacks.pgd as it was before this benchmark (commit 41dbfac), verbatim in substance: the 'before' row."""
    x = x.detach()
    with attacks.attack_mode(model, "eval"):
        x_adv = (x + attacks._random_uniform(x, eps, generator)).clamp_(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
                logits = model(x_adv)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv.requires_grad_(False)
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)
    return x_adv.detach()


def _autocast_ctx(device, dtype):
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------- 1. PGD step throughput

PGD7 = dict(eps=8 / 255, step_size=2 / 255, steps=7)


def _pgd_configs(model, x, y, device) -> dict:
    """One PGD-7 batch per configuration (the report's rows, in order): torchattacks, the 'before' loop and
    advlayers, contiguous fp32, channels_last fp32 and bf16+channels_last (+ torch.compile on CUDA)."""
    import torchattacks

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def ta(m, xx, dtype=None):
        atk = torchattacks.PGD(m, eps=PGD7["eps"], alpha=PGD7["step_size"], steps=PGD7["steps"], random_start=True)

        def run():
            with _autocast_ctx(device, dtype):
                atk(xx, y)
        return run

    def ours(m, xx, dtype=None, fold=True):
        return lambda: attacks.pgd(m, xx, y, **PGD7, generator=torch.Generator().manual_seed(1), autocast=dtype,
                                   fold_bn=fold)

    def legacy(m, xx, dtype=None):
        return lambda: _legacy_pgd(m, xx, y, **PGD7, generator=torch.Generator().manual_seed(1), autocast=dtype)

    bf16 = torch.bfloat16
    configs = {
        "torchattacks fp32": ta(model, x),
        "advlayers before (41dbfac) fp32": legacy(model, x),
        "advlayers fp32, fold_bn=False": ours(model, x, fold=False),
        "advlayers fp32": ours(model, x),
        "torchattacks fp32 channels_last": ta(model_cl, x_cl),
        "advlayers fp32 channels_last": ours(model_cl, x_cl),
        "torchattacks bf16+channels_last": ta(model_cl, x_cl, bf16),
        "advlayers before (41dbfac) bf16+channels_last": legacy(model_cl, x_cl, bf16),
        "advlayers bf16+channels_last": ours(model_cl, x_cl, bf16),
    }
    if torch.device(device).type == "cuda":
        configs["advlayers bf16+channels_last+compile"] = ours(torch.compile(model_cl), x_cl, bf16)
    return configs


def bench_pgd_throughput(args) -> dict:
    device = args.device
    archs = ["resnet18"] if args.quick else ["resnet18", "vgg11_bn"]
    batch = 8 if args.quick else 128
    out = {"batch": batch, "archs": {}}
    for arch in archs:
        g = torch.Generator().manual_seed(0)
        model = build_model(arch, 10, 32, seed=0).to(device).eval()
        x = torch.rand(batch, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (batch,), generator=g).to(device)
        secs = interleaved(_pgd_configs(model, x, y, device), args.repeats, device)
        out["archs"][arch] = {k: {"seconds": s, "images_per_s": batch / s} for k, s in secs.items()}
        print(f"  {arch}: " + ", ".join(f"{k} {batch / s:.0f} img/s" for k, s in secs.items()), flush=True)
    return out


def profile_pgd(args) -> dict:
    """Self CPU time per op of one PGD-7 batch (resnet18): where the attack's time goes, with and without
    frozen parameters / folded BatchNorm, to explain the throughput ratio."""
    import torchattacks
    from torch.profiler import ProfilerActivity, profile

    batch = 4 if args.quick else 64
    g = torch.Generator().manual_seed(0)
    model = build_model("resnet18", 10, 32, seed=0).to(args.device).eval()
    x = torch.rand(batch, 3, 32, 32, generator=g).to(args.device)
    y = torch.randint(0, 10, (batch,), generator=g).to(args.device)
    atk = torchattacks.PGD(model, eps=PGD7["eps"], alpha=PGD7["step_size"], steps=PGD7["steps"], random_start=True)
    runs = {
        "torchattacks": lambda: atk(x, y),
        "advlayers fold_bn=False": lambda: attacks.pgd(model, x, y, **PGD7, fold_bn=False),
        "advlayers": lambda: attacks.pgd(model, x, y, **PGD7),
    }
    keys = ["aten::convolution_backward", "aten::mkldnn_convolution", "aten::convolution",
            "aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::_batch_norm_impl_index",
            "aten::threshold_backward", "aten::clamp_min_", "aten::add_", "aten::max_pool2d_with_indices_backward"]
    result = {}
    for name, fn in runs.items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        table = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}
        total = sum(v[0] for v in table.values())
        top = sorted(table.items(), key=lambda kv: -kv[1][0])[:8]
        result[name] = {"total_ms": total, "top": top,
                        "selected": {k: table.get(k, (0.0, 0)) for k in keys}}
    return result


# --------------------------------------------------------------------------- small trained models

# The adversarial training this benchmark times and evaluates: PGD with the evaluation's eps and step (section 3's
# floor counts its steps). The mnist5k-demo preset itself now trains with FGSM-RS, eps 0.15, no clean samples.
PGD_TRAINING = dict(attack="pgd", eps=0.1, step_size=0.025)


def _eval_dataset(args):
    from advlayers.core.datasets import load_dataset

    return load_dataset("digits" if args.quick else "mnist5k")


def trained_models(args, ds) -> dict:
    """A conventionally and an adversarially trained resnet18 (cached under benchmarks/_work/)."""
    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import pretrain

    WORK.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    settings = {
        # mnist5k-demo recipe (precision auto: bf16 + channels_last where native), shortened; adversarial: PGD
        "conventional": dict(epochs=1 if args.quick else 2, train_subset=64 if args.quick else 4000,
                             batch_size=32 if args.quick else 128),
        "adversarial": dict(epochs=1, train_subset=32 if args.quick else 2000,
                            batch_size=32 if args.quick else 128, **PGD_TRAINING, steps=2 if args.quick else 7),
    }
    models = {}
    for mode, overrides in settings.items():
        path = WORK / f"{ds.info.name}_{mode}_{tag}.pt"
        key = json.dumps(overrides, sort_keys=True)
        model = build_model("resnet18", ds.info.num_classes, ds.info.image_size, seed=0)
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key:
                model.load_state_dict(saved["state"])
                models[mode] = model.eval()
                continue
        t0 = time.perf_counter()
        recipe = get_recipe("mnist5k-demo", **overrides)
        model = pretrain("resnet18", ds, recipe, mode=mode, seed=0, progress=False).model.eval()
        print(f"  trained {mode} resnet18 on {ds.info.name} ({overrides}) in {time.perf_counter() - t0:.0f}s",
              flush=True)
        torch.save({"key": key, "state": model.state_dict()}, path)
        models[mode] = model
    return models


# --------------------------------------------------------------------------- 2. PGD-200 evaluation


def _plain_pgd_eval(model, x, y, spec: AttackSpec, device) -> float:
    """The textbook loop: torchattacks PGD, every sample for every step, final iterate classified."""
    import torchattacks

    atk = torchattacks.PGD(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps, random_start=True)
    torch.manual_seed(0)
    correct = 0
    for i in range(0, len(y), 256):
        xb, yb = x[i:i + 256].to(device), y[i:i + 256].to(device)
        x_adv = atk(xb, yb)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / len(y)


def bench_eval(args, ds, models) -> dict:
    from advlayers.core.evaluation import evaluate

    n = 64 if args.quick else args.eval_n
    steps = 20 if args.quick else 200
    spec = AttackSpec(0.1, 0.025, steps)
    split = ds.test.subset(n, seed=0)
    x, y = next(split.batches(len(split), shuffle=False, augment=False))
    out = {"n": n, "steps": steps, "eps": spec.eps, "step_size": spec.step_size, "models": {}}
    for mode, model in models.items():
        model = model.to(args.device).eval()
        acc = {}

        def ours():
            acc["ours"] = evaluate(model, ds.test, spec, n=n, seed=0, batch_size=256, device=args.device,
                                   progress=False)

        def plain():
            acc["plain"] = _plain_pgd_eval(model, x, y, spec, args.device)

        # the plain loop is the long one: one warm-up-free round of each, ours timed on both sides of it
        secs = interleaved({"advlayers evaluate (any, shrinking)": ours, "plain torchattacks loop": plain},
                           args.eval_repeats, args.device, warmup=0)
        ours_s, plain_s = secs["advlayers evaluate (any, shrinking)"], secs["plain torchattacks loop"]
        out["models"][mode] = {
            "clean_acc": acc["ours"]["clean_acc"], "robust_ours": acc["ours"]["robust_acc"],
            "robust_plain": acc["plain"], "seconds_ours": ours_s, "seconds_plain": plain_s,
            "speedup": plain_s / ours_s,
        }
        print(f"  {mode}: clean {acc['ours']['clean_acc']:.3f} robust ours {acc['ours']['robust_acc']:.3f} "
              f"plain {acc['plain']:.3f}; {ours_s:.1f}s vs {plain_s:.1f}s = {plain_s / ours_s:.1f}x", flush=True)
    return out


# --------------------------------------------------------------------------- 3. adversarial training cost


def _floor_components(ds, bs: int, precision: str, channels_last: bool) -> dict:
    """The measured floor's components, same model, precision and layout, batch `bs`: a bare training step on B
    and on 2B samples, one attack step, one prediction."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("resnet18", ds.info.num_classes, ds.info.image_size, seed=0).to(memory_format=fmt)
    x = torch.rand(bs, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (bs,), generator=g)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def train_step(xx, yy):
        def step():
            model.train()
            with _autocast_ctx("cpu", dtype):
                logits = model(xx)
            F.cross_entropy(logits.float(), yy).backward()
            model.zero_grad(set_to_none=True)
        return step

    def attack_step():
        attacks.perturb(model, x, y, AttackSpec(0.1, 0.025, 1), autocast=dtype)

    def predict():
        attacks.predicted_labels(model, x, autocast=dtype)

    return {"train step B": train_step(x, y), "train step 2B": train_step(torch.cat([x, x]), torch.cat([y, y])),
            "attack step": attack_step, "predict": predict}


def bench_training(args, ds) -> dict:
    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import train

    batches = 1 if args.quick else args.train_batches
    bs = 16 if args.quick else 128
    steps = 2 if args.quick else 7
    out = {"batches": batches, "batch_size": bs, "steps": steps, "configs": {}}
    for label, precision, cl in (("bf16+channels_last (demo recipe)", "bf16", True), ("fp32", "fp32", False)):
        if args.quick and precision == "fp32":
            continue
        recipe = get_recipe("mnist5k-demo", epochs=1, batch_size=bs, train_subset=batches * bs, **PGD_TRAINING,
                            steps=steps, include_clean=True, precision=precision, channels_last=cl)

        def run(mode):
            model = build_model("resnet18", ds.info.num_classes, ds.info.image_size, seed=0)
            return lambda: train(model, ds.train, recipe, mode=mode, seed=0, progress=False)

        secs = interleaved({"clean": run("conventional"), "adversarial": run("adversarial"),
                            **_floor_components(ds, bs, precision, cl)}, args.repeats, "cpu")
        floor = (secs["predict"] + steps * secs["attack step"] + secs["train step 2B"]) / secs["train step B"]
        out["configs"][label] = {
            "seconds": secs, "ratio": secs["adversarial"] / secs["clean"], "measured_floor": floor,
        }
        print(f"  {label}: adversarial/clean {secs['adversarial'] / secs['clean']:.2f}x, "
              f"measured floor {floor:.2f}x", flush=True)
    return out


# --------------------------------------------------------------------------- 5. memory


def _memory_child(args) -> None:
    """Run in a subprocess: load data + model (+ optionally one PGD evaluation), print peak RSS as JSON."""
    from advlayers.core.evaluation import evaluate

    ds = _eval_dataset(args)
    model = build_model("resnet18", ds.info.num_classes, ds.info.image_size, seed=0)
    path = WORK / f"{ds.info.name}_conventional_{'quick' if args.quick else 'full'}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state"])
    model.eval()
    if args.memory_child == "eval":
        steps = 20 if args.quick else 200
        n = 64 if args.quick else args.eval_n
        evaluate(model, ds.test, AttackSpec(0.1, 0.025, steps), n=n, seed=0, batch_size=256, progress=False)
    hwm = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    print(json.dumps({"vmhwm_mib": hwm, "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_memory(args) -> dict:
    out = {}
    for what in ("baseline", "eval"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", what]
        if args.quick:
            cmd.append("--quick")
        cmd += ["--eval-n", str(args.eval_n), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[what] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  peak RSS: baseline {out['baseline']['vmhwm_mib']:.0f} MiB, PGD eval {out['eval']['vmhwm_mib']:.0f} MiB",
          flush=True)
    return out


# --------------------------------------------------------------------------- 4. pipeline


def _timed(cmd, cwd, env, time_v: bool = False) -> dict:
    """Wall seconds of `cmd`; with GNU time available, also the peak RSS of the largest process in the tree
    (`/usr/bin/time -v` reports the maximum over the command and its waited-for children)."""
    gnu_time = shutil.which("time") if time_v else None
    gnu_time = "/usr/bin/time" if time_v and Path("/usr/bin/time").exists() else gnu_time
    full = [gnu_time, "-v", *cmd] if gnu_time else cmd
    t0 = time.perf_counter()
    proc = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = {"cmd": " ".join(cmd), "seconds": wall, "rc": proc.returncode}
    if proc.returncode != 0:
        res["stderr_tail"] = proc.stderr[-2000:]
    if gnu_time:
        for line in proc.stderr.splitlines():
            if "Maximum resident set size" in line:
                res["max_rss_mib"] = int(line.split(":")[1]) / 1024
    return res


def bench_pipeline(args) -> dict:
    """`snakemake --cores 2 all_figures` from scratch in a temporary copy of the repository (results there),
    a no-op rerun, and a dry run of the paper config."""
    tmp = Path(tempfile.mkdtemp(prefix="advlayers-pipeline-"))
    try:
        copy_workflow(REPO, tmp)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp / "src"), os.environ.get("PYTHONPATH", "")])}
        snake = [sys.executable, "-m", "snakemake"]
        out = {
            "demo": _timed([*snake, "--cores", "2", "all_figures"], tmp, env, time_v=True),
            "noop_rerun": _timed([*snake, "--cores", "2", "all_figures"], tmp, env),
            # `--configfile=...`: the option takes several values, a following target would be read as a config file
            "paper_dry_run": _timed([*snake, "-n", "--configfile=config/paper.yaml", "all_figures"], tmp, env),
        }
        for k, v in out.items():
            print(f"  {k}: {v['seconds']:.1f}s rc={v['rc']}" + (f" peak RSS {v['max_rss_mib']:.0f} MiB"
                                                               if "max_rss_mib" in v else ""), flush=True)
        return out
    finally:
        if args.keep_pipeline_copy:
            print(f"  the demo's copy (figures in results/figures): {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _json_path(out: Path) -> Path:
    """The raw figures: benchmarks/_work/results.json for the default report, else next to the report."""
    return WORK / "results.json" if out.resolve() == (HERE / "results.md").resolve() else out.with_suffix(".json")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke version (< 1 min): tiny sizes, figures not meaningful")
    ap.add_argument("--out", type=Path, default=None, help="report path (default benchmarks/results.md; "
                    "--quick: benchmarks/_work/results-quick.md)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared machine OpenMP barriers across 2 threads stall "
                    "for whole scheduler slices; measured 12x slower than 1 thread under load)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default 5, quick 1)")
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--eval-repeats", type=int, default=1)
    ap.add_argument("--train-batches", type=int, default=4)
    ap.add_argument("--only", default="pgd,profile,eval,training,memory",
                    help="comma-separated sections to run (pgd, profile, eval, training, memory)")
    ap.add_argument("--pipeline", action="store_true", help="also time the Snakemake demo (section 4)")
    ap.add_argument("--keep-pipeline-copy", action="store_true", help="keep the demo's temporary copy (results)")
    ap.add_argument("--memory-child", choices=("baseline", "eval"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.only = set(args.only.split(","))
    if args.only - ALL_SECTIONS:
        ap.error(f"--only: unknown sections {sorted(args.only - ALL_SECTIONS)}; known: {sorted(ALL_SECTIONS)}")
    return args


def run_sections(args, res: dict) -> dict:
    """Run the sections of `args.only` into `res` (which may hold earlier figures of the others)."""
    only, ds, models = args.only, None, None
    if "pgd" in only:
        print("1. PGD-7 throughput", flush=True)
        res["pgd"] = bench_pgd_throughput(args)
    if "profile" in only:
        print("1b. profile", flush=True)
        res["profile"] = profile_pgd(args)
    if only & {"eval", "training", "memory"}:
        ds = _eval_dataset(args)
    if "eval" in only:
        print("2. PGD evaluation", flush=True)
        models = trained_models(args, ds)
        res["eval"] = bench_eval(args, ds, models)
    if "training" in only:
        print("3. adversarial training cost", flush=True)
        res["training"] = bench_training(args, ds)
    if "memory" in only:
        print("5. memory", flush=True)
        if models is None:
            trained_models(args, ds)  # the memory children load the cached conventional model
        res["memory"] = bench_memory(args)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args)
        return 0
    out = args.out or (WORK / "results-quick.md" if args.quick else HERE / "results.md")
    torch.manual_seed(0)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_at_start']}, torch {info['torch']}",
          flush=True)
    raw = _json_path(out)
    # a partial rerun: the sections not rerun keep their earlier figures
    res = json.loads(raw.read_text())["results"] if args.only != ALL_SECTIONS and raw.exists() else {}
    res = run_sections(args, res)
    pipeline = None
    if args.pipeline:
        print("4. pipeline", flush=True)
        pipeline = pipeline_section(info, bench_pipeline(args))
    body = render(info, res, args)
    write_report(out, body, pipeline, info)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"machine": info, "results": res}, indent=1, default=str))
    print(body)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
