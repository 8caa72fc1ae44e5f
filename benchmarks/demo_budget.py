"""The embedded demo's cost in units of this machine's own speed, and its claims verdicts.

    python benchmarks/demo_budget.py                    # T_step, all_figures (the config's seeds) and fig2
    python benchmarks/demo_budget.py --seeds 0 --seeds 1 # one demo run per --seeds (claims of each, side by side)
    python benchmarks/demo_budget.py --write            # and update the demo section of benchmarks/results.md
    python benchmarks/demo_budget.py --isa avx2         # as on a CPU without AVX-512 (oneDNN and ATen capped at
                                                        # AVX2: bf16 not native, so `auto` picks fp32 by itself)

T_step = one fp32 ResNet-18 training step (batch 128, 32 px, 2 threads, full width, median of 5), measured in
the same run. The budget (issue 19: at least 3 training seeds, confirmation images, a passing retraining
control): `snakemake --cores 2 all_figures` from scratch <= 1,200 T_step of wall time with `precision: auto`
resolving to fp32 (the path most laptops get); the cut-off figure with its claims (`fig2`, C0-C4,
results/claims/cutoff_<dataset>.md) had <= 265 T_step as a one-seed target. `fig2 claims` would
add every analysis, since the whole claims check reads every table.

--isa native (default): this CPU, fp32 forced with ADVLAYERS_PRECISION=fp32. --isa auto: this CPU, the config's
`precision: auto` (bf16 where oneDNN has native bf16, as a user's first run gets). --isa avx2: the whole run,
T_step included, sees an AVX2-only CPU (ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2,
MKL_ENABLE_INSTRUCTIONS=AVX2: torch's kernels as on a CPU without AVX-512; clock, caches and memory stay this
machine's) and `auto` decides by itself.

Printed: wall time, total CPU-seconds of the run (its process tree), per-rule wall (Snakemake `benchmark:`
files; single-threaded jobs, so about their CPU: the files' cpu_time is sampled and misses short jobs), the
per-job start-up overhead (per rule: a process that only imports what the rule's job imports before it
computes, times the rule's jobs) and the CPU flags; --write puts them into benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import platform
import re
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
SRC = REPO / "src"
sys.path.insert(0, str(SRC))

from advlayers.grid import layout  # noqa: E402  (torch-free)
from advlayers.tools.sources import copy_workflow  # noqa: E402

BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"
# all_figures: issue 19 (>= 3 training seeds, confirmation images, a passing retraining control); fig2: the
# earlier one-seed target of the cut-off figure
BUDGET = {"all_figures": 1200, "fig2": 265}
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def cpu_flags() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import torch

    return {"cpu": model, "cores": os.cpu_count(), "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "torch": str(torch.__version__)}


def t_step(repeats: int = 5) -> float:
    """Median seconds of one fp32 ResNet-18 training step (batch 128, 32 px, full width) with 2 threads."""
    import torch

    from advlayers.core.models import build_model

    torch.set_num_threads(2)
    model = build_model("resnet18", 10, 32, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.rand(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rule_scripts() -> dict[str, str | None]:
    """Every rule of the workflow (Snakefile, workflow/rules/*.smk) -> the script its jobs run (`script:`), or
    None: rebuild markers (`touch`) and target rules start no Python process."""
    out, rule = {}, None
    for smk in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(("rule ", "localrule ")):
                rule = line.split()[1].rstrip(":")
                out[rule] = None
            elif line.strip() == "script:" and rule:
                out[rule] = Path(lines[i + 1].strip().strip('"')).stem
    return out


def _module_file(dotted: str) -> Path | None:
    """The source of an advlayers module (None: not a module, e.g. a name inside one)."""
    base = SRC.joinpath(*dotted.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _absolute(node: ast.ImportFrom, module: str) -> ast.ImportFrom:
    """A relative import in `module` as an absolute one."""
    if not node.level:
        return node
    parts = module.split(".")
    is_package = _module_file(module).name == "__init__.py"
    package = parts[: len(parts) - node.level + is_package]
    return ast.ImportFrom(".".join(package + ([node.module] if node.module else [])), node.names, 0)


def _function_imports(module: str, name: str, seen: set) -> list[str]:
    """The imports inside function `name` of an advlayers module, and inside the functions of that module it
    calls by name (`run` -> `pretrain_files`): the library a job imports lazily, when it starts."""
    path = _module_file(module)
    if (module, name) in seen or path is None:
        return []
    seen.add((module, name))
    functions = {f.name: f for f in ast.parse(path.read_text()).body if isinstance(f, ast.FunctionDef)}
    if name not in functions:
        return []
    lines = []
    for node in ast.walk(functions[name]):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.append(ast.unparse(_absolute(node, module) if isinstance(node, ast.ImportFrom) else node))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            lines += _function_imports(module, node.func.id, seen)
    return lines


def _called_library_functions(tree: ast.Module) -> list[tuple[str, str]]:
    """(module, function) of each `alias.function(...)` call of the script on an advlayers module it imported
    (`from advlayers.jobs import evaluate` ... `evaluate.run(...)`)."""
    aliases = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("advlayers"):
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                            if _module_file(f"{node.module}.{a.name}")})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("advlayers")})
    return [(aliases[n.func.value.id], n.func.attr) for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id in aliases]


def script_imports(stem: str) -> str:
    """What a job of this script imports before it computes: Snakemake's preamble (it unpickles a
    snakemake.script.Snakemake), the script's module-level imports and the imports inside the library functions
    it calls (a job function imports torch and the rest of the library when it starts: `advlayers.jobs`)."""
    tree = ast.parse((REPO / "workflow" / "scripts" / f"{stem}.py").read_text())
    lines = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
             and getattr(node, "module", None) != "__future__"]
    seen: set = set()
    for module, function in _called_library_functions(tree):
        lines += _function_imports(module, function, seen)
    return "; ".join(dict.fromkeys(["import snakemake.script", *lines]))


def startup_cpu(repeats: int = 3) -> dict[str, float]:
    """Per workflow script: CPU-seconds of a process that only starts Python and imports what the script's job
    imports (median of `repeats`): the per-job start-up overhead."""
    paths = [str(REPO / "workflow" / "scripts"), str(SRC)]
    out = {}
    for stem in sorted({v for v in rule_scripts().values() if v}):
        code = f"import sys; sys.path[:0] = {paths!r}; {script_imports(stem)}"
        cpu = []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        out[stem] = statistics.median(cpu)
    return out


def overhead(rules: dict[str, int], startup: dict[str, float]) -> dict[str, dict]:
    """Per rule of a run: its jobs that start a process and their summed start-up CPU-seconds."""
    scripts = rule_scripts()
    unknown = sorted(set(rules) - set(scripts))
    if unknown:  # a rule the parser missed would count as free: refuse instead
        raise SystemExit(f"rules {unknown} of the run are not in the workflow's rule files; start-up not counted")
    return {rule: {"jobs": n, "each": startup[scripts[rule]], "cpu": n * startup[scripts[rule]]}
            for rule, n in sorted(rules.items()) if scripts[rule]}


def copy_repo(seeds: list[int] | None) -> Path:
    """The workflow copied to a temporary folder, its demo config trained with `seeds` (None: the config's)."""
    tmp = copy_workflow(REPO, tempfile.mkdtemp(prefix="advlayers-demo-"))
    if seeds is not None:
        path = tmp / "config" / "config.yaml"
        text, n = re.subn(r"^seeds: \[[0-9, ]*\]", f"seeds: {list(seeds)}", path.read_text(), count=1, flags=re.M)
        if not n:  # the demo would silently run the config's seeds
            raise SystemExit(f"{path} has no line 'seeds: [...]' to set the training seeds {seeds} in")
        path.write_text(text)
    return tmp


def config_seeds(root: Path) -> list[int]:
    import yaml

    return yaml.safe_load((root / "config" / "config.yaml").read_text())["seeds"]


def run(root: Path, targets: list[str], isa: str) -> dict:
    """Wall and CPU seconds (the whole process tree) of `snakemake --cores 2 <targets>` from scratch."""
    env = {**os.environ, **({"ADVLAYERS_PRECISION": "fp32"} if isa == "native" else {})}  # auto: as configured
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *targets], cwd=root, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"snakemake {' '.join(targets)} failed in {root}:\n{proc.stderr[-3000:]}")
    rules = [line.split("Rule: ")[1].rstrip(")") for line in proc.stderr.splitlines()
             if line.startswith("Finished jobid") and "Rule: " in line]
    return {"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "jobs": len(rules), "rules": dict(collections.Counter(rules)), "stages": stages(root),
            "precision": precision(root)}


def precision(root: Path) -> list[str]:
    """The precisions the run's evaluations record (what `auto` resolved to)."""
    import pandas as pd

    found = set()
    tables = [*root.glob(layout.table_path("cutoff")), *root.glob(layout.table_path(layout.cutoff_table("*")))]
    for path in tables:
        table = pd.read_parquet(path)
        if "precision" in table:
            found.update(table["precision"].dropna().astype(str))
    return sorted(found)


def stages(root: Path) -> dict:
    """Per rule: jobs and summed wall seconds from the Snakemake benchmark files (`layout.benchmark_path`: one
    per job, under the rule's folder)."""
    out: dict[str, dict] = {}
    for rule in rule_scripts():
        for tsv in root.glob(layout.benchmark_path(rule, "**/*")):
            header, values = tsv.read_text().splitlines()[:2]
            row = dict(zip(header.split("\t"), values.split("\t")))
            entry = out.setdefault(rule, {"jobs": 0, "wall": 0.0})
            entry["jobs"] += 1
            entry["wall"] += float(row["s"])
    return out


def claims(root: Path) -> list[dict]:
    import pandas as pd

    table = pd.read_parquet(root / layout.path("claims_table"))
    extra = [c for c in ("verdict_unadjusted", "holds_familywise", "n_seeds", "image_part") if c in table]
    return table[["claim", "variant", "value", "ci_lo", "ci_hi", "verdict", *extra]].to_dict("records")


def report(res: dict) -> str:
    m, ts, isa = res["machine"], res["t_step"], res["isa"]
    full = res["runs"]["all_figures"]
    chosen = ", ".join(full["precision"]) or "?"
    how = ("this CPU's own kernels, precision as configured (`auto`)" if isa == "auto" else
           "precision forced to fp32 (ADVLAYERS_PRECISION=fp32; on this CPU `auto` would pick "
           f"{'bf16' if m['onednn_bf16'] else 'fp32'})" if isa == "native" else
           "torch's kernels capped at AVX2 (" + ", ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) +
           f": an AVX2-only CPU as torch sees it; oneDNN bf16 then {m['onednn_bf16']}), precision left at `auto`")
    L = [BEGIN.replace("begin", f"begin {isa}"), f"## Demo budget, {isa} ISA (filled by `python benchmarks/demo_budget.py "
         f"--isa {isa} --write`)", "",
         f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores; AVX2 {m['avx2']}, AVX-512 {m['avx512f']}, "
         f"AVX-512-BF16 {m['avx512_bf16']}, AMX-BF16 {m['amx_bf16']}), torch {m['torch']}, load at start "
         f"{res['load']}; {how}. The runs recorded precision **{chosen}**.", "",
         f"T_step (fp32 ResNet-18 training step, batch 128, 32 px, 2 threads, full width, median of 5, same ISA) = "
         f"**{ts:.3f} s** ({res['t_step_after']:.3f} s after the runs).", "",
         "| run (from scratch) | jobs | wall s | wall / T_step | budget (T_step) | CPU s |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in res["runs"].items():
        ratio = r["wall"] / ts
        L.append(f"| `snakemake --cores 2 {name}` | {r['jobs']} | {r['wall']:.0f} | {ratio:.0f} | "
                 f"{BUDGET.get(name, '-')} {'(met)' if ratio <= BUDGET.get(name, 1e9) else '(**not met**)'} | "
                 f"{r['cpu']:.0f} |")
    L += ["", "Per rule (all_figures run; Snakemake `benchmark:` files; one thread per job, so wall ~ CPU):", "",
          "| rule | jobs | wall s (sum) |", "|---|---:|---:|"]
    for rule, s in sorted(full["stages"].items(), key=lambda kv: -kv[1]["wall"]):
        L.append(f"| {rule} | {s['jobs']} | {s['wall']:.0f} |")
    per_rule = overhead(full["rules"], res["startup"])
    total = sum(r["cpu"] for r in per_rule.values())
    started = sum(r["jobs"] for r in per_rule.values())
    L += ["", "Per-job start-up: CPU-seconds of a process that only starts Python and imports what the rule's script "
          "imports (Snakemake's preamble and the script's imports; nothing computed), times the rule's jobs in the "
          f"all_figures run ({started} of its {full['jobs']} jobs start a process; rebuild markers and target rules "
          "start none):", "", "| rule | jobs | start-up CPU-s each | CPU-s |", "|---|---:|---:|---:|"]
    for rule, r in sorted(per_rule.items(), key=lambda kv: -kv[1]["cpu"]):
        L.append(f"| {rule} | {r['jobs']} | {r['each']:.2f} | {r['cpu']:.1f} |")
    L += [f"| **all** | {started} | | **{total:.0f}** = **{100 * total / full['cpu']:.1f}%** of the demo's "
          f"{full['cpu']:.0f} CPU-s (target < 10%: {'met' if total < 0.1 * full['cpu'] else '**not met**'}) |"]
    if res.get("claims"):
        L += ["", "Claims verdicts (claims rules of the config; one column per demo run, each pooling the training "
              "seeds named in its header; value [95% interval]; v2: `own` = the verdict before the retraining "
              "control, `fw` = holds family-wise (Holm)):", "",
              "| claim | " + " | ".join(f"seeds {s}" for s in res["claims"]) + " |",
              "|---|" + "---|" * len(res["claims"])]
        ids = [(c["claim"], c["variant"]) for c in next(iter(res["claims"].values()))]
        for cid, variant in ids:
            cells = []
            for rows in res["claims"].values():
                row = next((r for r in rows if (r["claim"], r["variant"]) == (cid, variant)), None)
                cells.append("" if row is None else _verdict_cell(row))
            L.append(f"| {cid}{' ' + variant if variant else ''} | " + " | ".join(cells) + " |")
    L += ["", END.replace("end", f"end {isa}")]
    return "\n".join(L)


def _verdict_cell(row: dict) -> str:
    if row["verdict"] == "not run":
        return "not run"
    text = f"{row['verdict']} ({row['value']:.2f} [{row['ci_lo']:.2f}, {row['ci_hi']:.2f}])"
    if row.get("verdict_unadjusted") and row["verdict_unadjusted"] != row["verdict"]:
        text += f", own: {row['verdict_unadjusted']}"
    return text + (", fw" if row.get("holds_familywise") else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", action="append",
                    help="training seeds of one demo run (repeat for several runs; default: the config's seeds)")
    ap.add_argument("--no-fig2", action="store_true", help="skip the separate fig2 run")
    ap.add_argument("--write", action="store_true", help="update the demo section of benchmarks/results.md")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (results, figures)")
    ap.add_argument("--isa", choices=("native", "avx2", "auto"), default="native",
                    help="native: this CPU, fp32 forced; avx2: oneDNN/ATen capped at AVX2, precision auto; "
                    "auto: this CPU, precision as configured (`auto`: bf16 where oneDNN has native bf16)")
    args = ap.parse_args(argv)
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        # torch reads these at import: restart with them so that T_step and every job see the same CPU
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
           "isa": args.isa, "machine": cpu_flags(), "t_step": t_step(), "startup": startup_cpu(), "runs": {},
           "claims": {}}
    print(f"T_step {res['t_step']:.3f} s; start-up {res['startup']}", flush=True)
    copies = []
    for i, seeds in enumerate(args.seeds or [None]):
        root = copy_repo(seeds)
        copies.append(root)
        r = run(root, ["all_figures"], args.isa)
        if i == 0:
            res["runs"]["all_figures"] = r
        label = ", ".join(map(str, seeds)) if seeds else ", ".join(map(str, config_seeds(root)))
        res["claims"][label] = claims(root)
        print(f"seeds {label}: all_figures {r['wall']:.0f} s wall ({r['wall'] / res['t_step']:.0f} T_step), "
              f"{r['cpu']:.0f} CPU-s, precision {r['precision']}", flush=True)
    if not args.no_fig2:
        root = copy_repo(args.seeds[0] if args.seeds else None)
        copies.append(root)
        res["runs"]["fig2"] = run(root, ["fig2"], args.isa)
        print(f"fig2: {res['runs']['fig2']['wall']:.0f} s wall ({res['runs']['fig2']['wall'] / res['t_step']:.0f} "
              "T_step)", flush=True)
    res["t_step_after"] = t_step()
    text = report(res)
    print(text)
    (HERE / "_work").mkdir(exist_ok=True)
    (HERE / "_work" / f"demo_budget_{args.isa}.json").write_text(json.dumps(res, indent=1, default=str))
    if args.write:
        path = HERE / "results.md"
        old = path.read_text() if path.exists() else "# advlayers benchmarks\n"
        begin, end = BEGIN.replace("begin", f"begin {args.isa}"), END.replace("end", f"end {args.isa}")
        if begin in old and end in old:
            old = old[:old.index(begin)] + old[old.index(end) + len(end):].lstrip("\n")
        path.write_text(old.rstrip("\n") + "\n\n" + text + "\n")
    for root in copies:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
