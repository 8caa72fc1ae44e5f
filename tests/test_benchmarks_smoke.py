"""CI smoke test of benchmarks/run.py --quick: the script runs end to end and writes a report whose tables hold
what must be true on any machine (positive finite timings, robust accuracy never above clean accuracy, an
adversarial training step dearer than a clean one, figures consistent with the raw JSON). No timing thresholds
(absolute and relative times depend on the machine and its load). And benchmarks/demo_budget.py's start-up
count, without running the demo."""

import ast
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PGD_CONFIGS = ("torchattacks fp32", "advlayers before (41dbfac) fp32", "advlayers fp32, fold_bn=False",
               "advlayers fp32", "torchattacks fp32 channels_last", "advlayers fp32 channels_last",
               "torchattacks bf16+channels_last", "advlayers before (41dbfac) bf16+channels_last",
               "advlayers bf16+channels_last")


def table_after(text: str, heading: str) -> list[dict]:
    """The rows (column -> cell) of the first markdown table in the section that starts with `heading`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("|", "#")))
    assert lines[first].startswith("|"), f"no table under {heading!r}"
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip()[1:-1].split("|")])
    header, rule, *body = rows
    assert set("".join(rule)) <= set("-:"), rule
    assert all(len(row) == len(header) for row in body), (header, body)
    return [dict(zip(header, row)) for row in body]


def number(cell: str, suffix: str = "") -> float:
    assert cell.endswith(suffix), cell
    value = float(cell[: len(cell) - len(suffix)] if suffix else cell)
    assert math.isfinite(value), cell
    return value


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("torchattacks")
    out = tmp_path_factory.mktemp("bench") / "results.md"
    # medians of 3 rounds: one scheduler stall on a shared machine cannot reverse a comparison on its own
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--repeats", "3",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow  # end to end: about a minute (more on a loaded machine)
def test_benchmarks_quick_writes_a_table(quick_run):
    text, raw = quick_run
    for heading in ("## Machine", "## 1. PGD-7 throughput", "## 2. PGD-20 evaluation", "## 3. Adversarial training",
                    "## 5. Memory", "## 4. Pipeline", "## 6. GPU", "## Goals"):
        assert heading in text, heading
    assert "**Not measured: no GPU in this session.**" in text or "Measured on" in text
    assert "Not run yet: `python benchmarks/run.py --pipeline`" in text  # a fresh report: no pipeline figures
    assert f"| cores | {os.cpu_count()} |" in text and "| torch_threads | 1 |" in text
    assert set(raw["results"]) == {"pgd", "profile", "eval", "training", "memory"}


@pytest.mark.slow
def test_benchmarks_quick_pgd_table(quick_run):
    """Every configuration timed: finite positive seconds and images/s (= batch / seconds in the raw figures),
    each torchattacks row its own reference (ratio 1.00x)."""
    text, raw = quick_run
    rows = table_after(text, "## 1. PGD-7 throughput")
    assert list(rows[0]) == ["arch", "configuration", "s / batch", "images/s", "ratio vs torchattacks"]
    assert [(r["arch"], r["configuration"]) for r in rows] == [("resnet18", c) for c in PGD_CONFIGS]
    for r in rows:
        assert number(r["s / batch"]) >= 0 and number(r["images/s"]) > 0 and number(r["ratio vs torchattacks"], "x") > 0
        if r["configuration"].startswith("torchattacks"):
            assert r["ratio vs torchattacks"] == "1.00x", r
    pgd = raw["results"]["pgd"]
    for name, r in pgd["archs"]["resnet18"].items():
        assert r["seconds"] > 0 and r["images_per_s"] == pytest.approx(pgd["batch"] / r["seconds"]), name
    profile = table_after(text, "### Where the time goes")
    assert number(profile[-1]["advlayers"]) > 0 and number(profile[-1]["torchattacks"]) > 0


@pytest.mark.slow
def test_benchmarks_quick_evaluation_table(quick_run):
    """Accuracies in [0, 1], robust accuracy never above clean (a sample wrong clean is never counted robust),
    whole samples out of n, positive timings."""
    text, raw = quick_run
    rows = table_after(text, "## 2. PGD-20 evaluation")
    assert list(rows[0]) == ["model", "clean acc", "robust acc advlayers", "robust acc plain loop", "s advlayers",
                             "s plain", "speed-up"]
    assert [r["model"] for r in rows] == ["conventional", "adversarial"]
    for r in rows:
        clean, robust, plain = (number(r[k]) for k in ("clean acc", "robust acc advlayers", "robust acc plain loop"))
        assert 0 <= robust <= clean <= 1 and 0 <= plain <= 1, r
        assert number(r["s advlayers"]) >= 0 and number(r["s plain"]) >= 0 and number(r["speed-up"], "x") > 0
    e = raw["results"]["eval"]
    for mode, r in e["models"].items():
        assert r["robust_ours"] <= r["clean_acc"], mode
        for key in ("clean_acc", "robust_ours", "robust_plain"):
            assert (r[key] * e["n"]) == pytest.approx(round(r[key] * e["n"])), (mode, key)
        assert r["seconds_ours"] > 0 and r["speedup"] == pytest.approx(r["seconds_plain"] / r["seconds_ours"])


@pytest.mark.slow
def test_benchmarks_quick_training_and_memory_tables(quick_run):
    """The adversarial step costs more than the clean one (the attack adds forward/backward passes), and more
    than its bare floor's denominator; peak memory positive."""
    text, raw = quick_run
    rows = table_after(text, "## 3. Adversarial training cost")
    assert list(rows[0]) == ["configuration", "s clean", "s adversarial", "adversarial / clean", "measured floor",
                             "extra s / attack's own extra s"]
    assert [r["configuration"] for r in rows] == ["bf16+channels_last (demo recipe)"]
    for r in rows:
        assert number(r["s adversarial"]) >= number(r["s clean"]) >= 0, r
        assert number(r["adversarial / clean"], "x") > 1 and number(r["measured floor"], "x") > 1, r
        number(r["extra s / attack's own extra s"])
    for label, r in raw["results"]["training"]["configs"].items():
        s = r["seconds"]
        assert all(v > 0 for v in s.values()), label
        assert r["ratio"] == pytest.approx(s["adversarial"] / s["clean"]) and r["ratio"] > 1, label
    memory = table_after(text, "## 5. Memory")
    assert [r["process"] for r in memory] == ["load data + model only", "+ PGD evaluation"]
    assert all(number(r["peak RSS (MiB)"]) > 0 for r in memory)
    goals = table_after(text, "## Goals")
    assert len(goals) == 2 + 2 * 2 + 1  # PGD (one arch), evaluation (two models), training (one configuration)
    assert {g["status"] for g in goals} <= {"**met**", "**not met**", "-"}


def test_demo_budget_counts_the_start_up_of_every_job_that_starts_python(tmp_path):
    """benchmarks/demo_budget.py's start-up share: each rule maps to the script its jobs run (None: no process);
    a job's imports include those inside the library function its script calls; a run's rule it does not know
    stops the count instead of counting as free; per-rule wall is read from the layout's benchmark files."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import demo_budget

    from advlayers.grid import layout
    from advlayers.grid.vocabulary import Setting

    scripts = demo_budget.rule_scripts()
    assert scripts["pretrain"] == "pretrain" and scripts["cutoff_claims"] == "claims"
    assert scripts["evaluate_autoattack"] == "evaluate" and scripts["embed_features"] == "embed_features"
    assert scripts["table_rebuild_marker"] is None and scripts["all_figures"] is None and scripts["fig2"] is None
    imports = demo_budget.script_imports("evaluate")
    assert imports.startswith("import snakemake.script") and "from advlayers.jobs import evaluate" in imports
    assert "pandas" not in imports  # an evaluation job writes its outcomes with pyarrow alone
    # lazy imports of the job functions: advlayers.jobs.pretrain.pretrain_files (via run), jobs.features.sample
    assert "from advlayers.core.training import pretrain" in demo_budget.script_imports("pretrain")
    assert "from advlayers.analyses.features import" in demo_budget.script_imports("sample_features")
    for stem in {s for s in scripts.values() if s}:  # no stale module names: each one is a file of src/
        for statement in demo_budget.script_imports(stem).split("; "):
            node = ast.parse(statement).body[0]
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                assert not name.startswith("advlayers") or demo_budget._module_file(name), (stem, name)
    cost = demo_budget.overhead({"evaluate": 3, "table_rebuild_marker": 7, "fig2": 1},
                                {"evaluate": 1.5, "table": 0.4})
    assert cost == {"evaluate": {"jobs": 3, "each": 1.5, "cpu": 4.5}}
    with pytest.raises(SystemExit, match="not_a_rule"):
        demo_budget.overhead({"not_a_rule": 1}, {})
    net = Setting("digits", "resnet18", 0, "conventional")
    jobs = [("evaluate", "pretrained", 1.5), ("evaluate", "cutoff_nets", 2.0), ("evaluate_autoattack", "autoattack", 4.0)]
    for rule, job, seconds in [*((r, layout.job_name(r, net, unit=u), s) for r, u, s in jobs), ("table", "cutoff", 0.25)]:
        tsv = tmp_path / layout.benchmark_path(rule, job)
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")
    assert demo_budget.stages(tmp_path) == {"evaluate": {"jobs": 2, "wall": 3.5},
                                            "evaluate_autoattack": {"jobs": 1, "wall": 4.0},
                                            "table": {"jobs": 1, "wall": 0.25}}


@pytest.mark.slow
def test_input_pipeline_benchmark_quick():
    """benchmarks/input_pipeline.py --quick: FolderSplit decodes the JPEGs it writes and their decoded-image cache is
    built and read in the same run (positive rates, CPU seconds beside wall seconds), and the workers-per-GPU table
    covers every ImageNet/Imagenette arch and stage of the paper config for both paths (workers = the GPU's
    images/s / one worker's)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "input_pipeline.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per = {(r["path"], r["transform"]): r for r in table_after(proc.stdout, "## Input pipeline")}
    train, evaluation = "train (RandomResizedCrop + flip)", "eval (Resize + CenterCrop)"
    assert set(per) == {("pil", train), ("pil", evaluation), ("cache", train), ("cache", evaluation),
                        ("cache", "cache build (decode + Resize, once per image)")}
    assert all(number(r["images"]) % 32 == 0 and number(r["CPU s"]) > 0 and number(r["wall s"]) > 0
               for r in per.values())
    assert "imagenet: 1,281,167 + 50,000 images x" in proc.stdout
    lines = proc.stdout.splitlines()
    gpu_at = next(i for i, line in enumerate(lines) if line.startswith("| dataset | arch | stage"))
    rows = table_after("\n".join(["## gpu"] + lines[gpu_at:]), "## gpu")
    assert {(r["dataset"], r["arch"]) for r in rows} == {("imagenet", "resnet50")} | {
        ("imagenette", a) for a in ("resnet18", "resnet50", "vgg11_bn", "vgg16_bn")}
    for path in ("pil", "cache"):
        train_rate = number(per[(path, train)]["images / CPU s (one worker)"])
        for r in rows:
            if "evaluate" not in r["stage"]:
                gpu = number(r["GPU images/s"].replace(",", ""))
                assert number(r[f"workers per GPU ({path})"]) == pytest.approx(gpu / train_rate, abs=0.06, rel=0.02)


def test_digest_cost_benchmark_counts_the_paper_outcome_rows():
    """benchmarks/digest_cost.py: the outcome table it times has one row per evaluated net of config/paper.yaml and
    per confirmation image (the plan's nets x the test split minus its tuning images), and it prints the four
    timed steps and both ratios."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import digest_cost
    from advlayers.grid import plan, validate
    from advlayers.grid.vocabulary import TEST_SIZES, tuning_size

    config = validate.load(REPO / "config" / "paper.yaml", roots=False)
    nets = digest_cost.paper_rows(config)
    assert len(nets) == sum(
        len(m) for s in plan.settings(config) for m in plan.evaluation_units(config, s).values())
    assert {n for s, _, n in nets if s.dataset == "cifar10"} == {10000 - tuning_size("cifar10", 10000)} == {9000}
    table = digest_cost.outcome_table(nets[:3], scale=0.01)
    assert table.num_rows == 3 * 90 and table.column_names == [
        "dataset", "arch", "seed", "pretraining", "cell", "attack", "image_part", "test_index", "clean_correct",
        "robust_correct"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "digest_cost.py"), "--scale", "0.001",
                           "--repeats", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {r["step"]: r for r in table_after("## t\n" + proc.stdout.split("median of 1\n", 1)[1], "## t")}
    assert set(steps) == {"write with digest", "write without", "read + verify digest", "read without"}
    assert all(number(r["CPU s"]) >= 0 for r in steps.values())
    assert "write: with/without digest = " in proc.stdout and "read: with/without digest = " in proc.stdout
    assert TEST_SIZES["imagenet"] == 50000


def test_ablation_eps_figure_from_two_runs(tmp_path):
    """benchmarks/ablation_eps.py reads each run's claims table through the checked reader and puts both radii side
    by side: verdicts and intervals in the markdown table, a figure file; a corrupted claims table is refused."""
    from advlayers.io import write_parquet

    def run(folder, value, verdict):
        rows = [{"claim": c, "statistic": "s", "value": value, "ci_lo": value - 0.05, "ci_hi": value + 0.05,
                 "threshold": 0.25, "side": "inside ±" if c == "C5b" else "<", "verdict": verdict,
                 "verdict_unadjusted": "holds", "holds_familywise": verdict == "holds", "dataset": "mnist5k",
                 "arch": "resnet18", "attack": "PGD-10"} for c in ("A", "C2", "C5a", "C5b")]
        path = tmp_path / folder / "results" / "tables" / "claims.parquet"
        path.parent.mkdir(parents=True)
        write_parquet(path, rows, metadata={"inputs": {}})
        return path

    run("eps0.15", 0.08, "confounded")
    bad = run("eps0.1", 0.12, "holds")
    out = tmp_path / "ablation.png"
    cmd = [sys.executable, str(REPO / "benchmarks" / "ablation_eps.py"), "--run", f"0.15={tmp_path / 'eps0.15'}",
           "--run", f"0.1={tmp_path / 'eps0.1'}", "--out", str(out), "--markdown"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| C2 | 0.12 [0.07, 0.17] holds fw | 0.08 [0.03, 0.13] confounded (holds) |" in done.stdout
    assert out.stat().st_size > 10_000
    twice = tmp_path / "twice"  # a run with two rows of a claim (two archs): refused, not the first one taken
    write_parquet(twice / "results" / "tables" / "claims.parquet",
                  [{"claim": "C2", "value": 0.1, "dataset": "mnist5k", "arch": a, "attack": "PGD-10"}
                   for a in ("resnet18", "vgg11_bn")], metadata={"inputs": {}})
    two = subprocess.run([*cmd[:2], "--run", f"0.1={twice}", "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert two.returncode != 0 and "2 rows of claim C2" in two.stderr and "vgg11_bn" in two.stderr
    # damage the stored value 0.12 (a flip elsewhere may hit bytes that no value depends on, e.g. page statistics)
    data = bad.read_bytes()
    assert struct.pack("<d", 0.12) in data
    bad.write_bytes(data.replace(struct.pack("<d", 0.12), struct.pack("<d", 0.13)))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "claims.parquet" in done.stderr


def test_vmap_training_benchmark_quick():
    """benchmarks/vmap_training.py checks its vmap gradients against the K plain ones, then prints the ratio."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vmap_training.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| native | 2 |"))
    assert float(row.rstrip(" |").split("|")[-1].strip().rstrip("x")) > 0
