"""The preflight (config/preflight.yaml, the `preflight` target, advlayers.preflight.checklist): the paper's
whole DAG at toy size resolves with few jobs; a real CPU run of the same logic, narrowed to what CI affords,
ends in an all-ok checklist; the checklist flags ranks that disagree and outputs that are missing."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.utils import update_config

from advlayers.grid import conf, layout, plan, vocabulary as vocab
from advlayers.grid.vocabulary import Setting
from advlayers.core.checkpoints import save_checkpoint
from advlayers.core.models import build_model
from advlayers.io import write_json
from advlayers.tools.preflight import RULES, checklist, expected_outputs, pretrain_benchmark
from advlayers.tools.verify import verify
from helpers import REPO, copy_repo, dry_run, fake_paper_roots, snakemake

PAPER = ("--configfile", "config/paper.yaml", "config/preflight.yaml")
INCLUDE = 'include: "workflow/rules/preflight.smk"'


def _with_preflight(root: Path) -> Path:
    """The copy's Snakefile with the preflight rules (a no-op once the Snakefile includes them itself)."""
    snakefile = root / "Snakefile"
    if INCLUDE not in snakefile.read_text():
        snakefile.write_text(snakefile.read_text() + f"\n\n{INCLUDE}\n")
    return root


def _paper_preflight_config() -> dict:
    """config/paper.yaml with config/preflight.yaml merged on top, as Snakemake merges --configfile files."""
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config" / "preflight.yaml").read_text()))
    return config


# --------------------------------------------------------------------------- the overlay and its DAG


def test_overlay_keeps_every_dataset_arch_and_analysis():
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config = _paper_preflight_config()
    assert list(config["datasets"]) == list(paper["datasets"])
    assert config["analyses"].keys() == paper["analyses"].keys()
    assert plan.cells(config) == plan.cells(paper) and plan.figures(config) == plan.figures(paper)
    assert plan.tables(config) == plan.tables(paper)
    for ds, dcfg in config["datasets"].items():
        assert dcfg["archs"] == paper["datasets"][ds]["archs"]
        assert dcfg.get("decode") == paper["datasets"][ds].get("decode")  # the preflight reads Imagenette's cache too
        for key in ("recipe_overrides", "retrain_overrides"):
            assert dcfg[key]["epochs"] == 1 and dcfg[key]["train_subset"] == 256
        ev = conf.eval_settings(config, ds)
        assert ev["n"] == 64 and ev["steps"] == 10 and ev["eps"] == paper["datasets"][ds]["eval"]["eps"]
        assert ev["step_size"] == pytest.approx(ev["eps"] / 4)
        assert conf.autoattack_eval_settings(config, ds)["n"] <= ev["n"]  # AutoAttack's images are PGD's first ones
    assert conf.resources(config, "imagenet", "pretrain", "gpu", 1) == 2
    assert config["grouping"] == {"jobs_per_net": 1, "analysis_apart": False}
    assert conf.eval_settings(config, "cifar10", "reinit")["n"] == 64
    features = config["analyses"]["features"]
    assert (features["n_images"], features["vectors_per_image"], features["embedding"]["max_points"]) == (32, 10, 1000)


@pytest.fixture(scope="module")
def paper_copy(tmp_path_factory):
    root = _with_preflight(copy_repo(tmp_path_factory.mktemp("preflight-dag")))
    fake_paper_roots(root)
    return root


def test_preflight_dag_is_the_paper_dag_with_one_retraining_job_per_net(paper_copy):
    jobs = dry_run(paper_copy, "preflight", *PAPER)
    config = _paper_preflight_config()
    expected = expected_outputs(config)
    assert set(jobs) == {r for r, files in expected.items() if files} | {"preflight"}
    assert set(RULES) <= set(jobs)  # the paper config runs every rule
    settings = plan.settings(config)
    assert len(jobs["pretrain"]) == 2 * len(settings)  # model + epoch-0 weights
    retrain_outputs = jobs["retrain"]
    assert len(retrain_outputs) == len(settings) == 18  # one retraining job per pretrained net
    assert all(layout.parse(o) == ("group", {**layout.parse(o)[1], "group": "cutoff0"}) for o in retrain_outputs)
    # records + outcomes of one evaluation job per pretrained net (with grouping: the net and its group at once)
    assert len(jobs["evaluate"]) == 2 * len(settings)
    assert all(layout.parse(o)[1]["unit"] == "cutoff_nets" for o in jobs["evaluate"])
    # every file the checklist expects is an output of some job of the dry run (group folders hold the cells)
    planned = {o for outs in jobs.values() for o in outs}
    assert {p for files in expected.values() for p in files if not layout.parse(p, ("cell",))} <= planned


def test_imagenet_pretraining_asks_for_two_gpus(paper_copy):
    _, out = snakemake(paper_copy, "-n", "preflight", *PAPER)
    gpus, rule, wildcards = {}, None, None
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule, wildcards = m.group(1), None
        elif rule == "pretrain" and line.startswith("wildcards:"):
            wildcards = tuple(re.search(r"dataset=(\w+), arch=(\w+)", line).groups())
        elif rule == "pretrain" and line.startswith("resources:"):
            gpus.setdefault(wildcards, set()).add(re.search(r"\bgpu=(\d+)", line).group(1))
    assert len(gpus) == 9 and gpus.pop(("imagenet", "resnet50")) == {"2"}
    assert set().union(*gpus.values()) == {"1"}


def test_preflight_rule_lints_clean(paper_copy):
    _, out = snakemake(paper_copy, "--lint", check=False)
    assert not re.search(r"Lints for (rule preflight|snakefile \S*preflight\.smk)", out), out[-3000:]


def test_normal_targets_unaffected(paper_copy):
    """The preflight rule adds nothing to the other targets' DAGs."""
    jobs = dry_run(paper_copy, "all_figures", "--configfile", "config/paper.yaml")
    assert "preflight" not in jobs and not any("preflight" in o or "throughput" in o for outs in jobs.values()
                                                 for o in outs)


# --------------------------------------------------------------------------- a real run on CPU


def _write_cifar(root: Path, per_batch: int = 20) -> None:
    """A fake CIFAR-10 in the real pickle format (tests/test_datasets.py): 5 x 20 training, 20 test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data,
                         b"labels": rng.integers(0, 10, per_batch).tolist()}, f, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, f, protocol=2)


def _cpu_config(data_root: Path) -> dict:
    """paper.yaml + preflight.yaml narrowed to what CI affords: CIFAR-10 with a ResNet-18 of width 0.125 on CPU
    (PGD-2, 64 training and 16 test images), every analysis pointed at it with fewer layer cut-offs, subsets,
    modules and methods. Every rule of the paper's DAG still runs."""
    config = _paper_preflight_config()
    cifar = config["datasets"]["cifar10"]
    small = {"train_subset": 64, "batch_size": 32, "steps": 2, "step_size": cifar["eval"]["eps"] / 2,
             "precision": "fp32"}
    cifar.update(root=str(data_root), archs=["resnet18"], width=0.125)
    cifar["recipe_overrides"].update(small)
    cifar["retrain_overrides"].update(small)
    cifar["eval"].update(n=16, steps=2, step_size=cifar["eval"]["eps"] / 2, batch_size=4)
    # AutoAttack in 2 shards of one batch each, merged by merge_shards (as the paper config's Imagenette)
    cifar["autoattack"].update(n=8, shards=2)
    config["datasets"] = {"cifar10": cifar}
    config.update(device="cpu", figures={"fig2": "cifar10"}, resources={"threads": 1, "gpu": 0})
    a = config["analyses"]
    a["layer_cutoff"]["cutoffs"] = [1, 5, 7]  # layer cut-off 5 = m110000, shared with the cut-off figure
    a["module_subsets"]["subsets"] = ["100000", "010000", "110000", "001111"]
    a["reinit"].update(datasets=["cifar10"], arch="resnet18", eval={"n": 8})
    # one module and t-SNE only: each embedding costs seconds of CPU, however few its points
    a["features"].update(dataset="cifar10", arch="resnet18", modules=["m1"], n_images=8, vectors_per_image=4,
                         batch_size=8, methods=["tsne"], embedding={"max_points": 200},
                         divergence={"max_points": 100, "n_permutations": 20, "max_images": 8})
    return config


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    root = _with_preflight(copy_repo(tmp_path_factory.mktemp("preflight-cpu")))
    _write_cifar(root / "data" / "cifar10")
    (root / "cpu.yaml").write_text(yaml.safe_dump(_cpu_config(root / "data" / "cifar10"), sort_keys=False))
    t0 = time.perf_counter()
    _, out = snakemake(root, "preflight", "--cores", "2", "--configfile", "cpu.yaml")
    return root, out, time.perf_counter() - t0


@pytest.mark.slow
def test_cpu_preflight_checklist_all_ok(cpu_run):
    root, out, seconds = cpu_run
    markdown = (root / "results" / "preflight.md").read_text()
    assert markdown.startswith("# Preflight checklist: ok"), markdown
    assert "# Preflight checklist: ok" in out  # printed at the end of the run
    assert "every rule of the DAG" in markdown and "NOT OK" not in markdown
    config = yaml.safe_load((root / "cpu.yaml").read_text())
    ran = [r for r, files in expected_outputs(config).items() if files]
    assert set(ran) == set(RULES)
    # (a): every trained checkpoint recorded fp32 on the CPU
    section = markdown.split("## (a)")[1].split("## (b)")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| cpu: ")]
    checkpoints = [r for r in rows if len(r) == 7]  # device, precision, torch, CUDA, pretrained, initial, cells
    assert {r[1] for r in checkpoints} == {"fp32", "-"}, rows  # "-": the epoch-0 weights (not trained)
    assert all(r[1] == "-" or int(r[6].rstrip(" |")) > 0 for r in checkpoints), rows
    throughput = yaml.safe_load((root / "results" / "throughput.yaml").read_text())
    assert set(throughput) == {"cifar10"} and throughput["cifar10"]["resnet18"] > 0
    print(f"CPU preflight: {seconds:.0f} s")


@pytest.mark.slow
def test_verify_reads_batched_evaluations(cpu_run, tmp_path):
    """A grouped run evaluates each pretrained net with its group in one file: verify finds it consistent, and
    names a record of another group's cell in it as swapped."""
    root = cpu_run[0]
    assert verify(root) == []
    copy = tmp_path / "run"
    shutil.copytree(root / "results", copy / "results")
    records = layout.evaluation_paths(Setting("cifar10", "resnet18", 0, "conventional"), "cutoff_nets")[0]
    path = copy / records
    data = json.loads(path.read_text())
    cell = next(r for r in data["records"] if r["cell"] != "pretrained")
    cell["checkpoint"] = cell["checkpoint"].replace("/cutoff0/", "/analysis0/")
    write_json(path, data)  # a valid file (its own digest recomputed) of another group's cell
    problems = [p for p in verify(copy) if p.path == records]
    assert [p.kind for p in problems] == ["swapped"], problems


# --------------------------------------------------------------------------- the checks on hand-made files

TINY = {
    "seeds": [0], "device": "cpu",
    "datasets": {"digits": {"archs": ["resnet18"], "width": 0.25, "recipe": "mnist5k-demo",
                            "recipe_overrides": {"epochs": 1, "train_subset": 64, "batch_size": 32},
                            "eval": {"n": 16, "eps": 0.1, "step_size": 0.05, "steps": 2},
                            "resources": {"pretrain": {"gpu": 2}}}},
    "cutoffs": {"before": [1], "after": [5]},
    "grouping": {"jobs_per_net": 1},
}


def _fake_run(root: Path, config: dict, digests=("a" * 64, "a" * 64)) -> None:
    """Every file the config expands to: real checkpoints (pretrained with the given rank digests), empty
    files elsewhere, and benchmark files."""
    model = build_model("resnet18", 10, 32, seed=0, width=0.25)
    history = [{"epoch": 1, "loss": 1.0, "train_acc": 0.5, "lr": 0.1, "seconds": 2.0}]
    for rule, files in expected_outputs(config).items():
        for rel in files:
            path = root / rel
            if rule == "retrain" and not rel.endswith(".pt"):
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".pt"):
                kind = layout.parse(rel)[0]
                meta = {"world_size": len(digests), "rank_digests": list(digests)} if kind == "pretrained" else {}
                precision = "" if kind == "initial" else "fp32"
                save_checkpoint(path, model, dataset="digits", seed=0, epoch=1, recipe={},
                                provenance={"device_name": "cpu: test", "precision": precision}, cell=kind,
                                history=history, precision=precision, **meta)
            elif rel.endswith(".json") and "/evaluations/" in rel:
                path.write_text('{"records": [{"cell": "pretrained", "provenance": {"eval_device_name": "cpu: x"}}]}')
            else:
                path.touch()
    for s in plan.settings(config):
        bench = root / pretrain_benchmark(s)
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\n4.0\t0:00:04\t100\n")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    _fake_run(root, TINY)
    return root


def test_checklist_ok_on_a_complete_run(fake_run):
    markdown, throughput, ok = checklist(TINY, fake_run)
    assert ok, markdown
    assert "2 ranks agreed" in markdown
    # 1 epoch x 64 images x units (conventional 1, FGSM-RS 1 + 1) = 64 + 128 units in 2 x 2 s on 2 GPUs,
    # width 0.25 (x 1/16), precision auto (/ the cost model's bf16 speed-up)
    from advlayers.tools.cost import AMP_SPEEDUP

    assert throughput["digits"]["resnet18"] == pytest.approx((64 + 128) / (2 * 2.0 * 2) / 16 / AMP_SPEEDUP, rel=1e-3)


def test_checklist_flags_disagreeing_ranks(tmp_path):
    _fake_run(tmp_path, TINY, digests=("a" * 64, "b" * 64))
    markdown, _, ok = checklist(TINY, tmp_path)
    assert not ok
    assert "## (b) DDP ranks agreed: NOT OK" in markdown and "different weights" in markdown
    assert "## (c) every rule produced its outputs: ok" in markdown


def test_checklist_flags_a_single_process_ddp_run(tmp_path):
    _fake_run(tmp_path, TINY, digests=("a" * 64,))
    markdown, _, ok = checklist(TINY, tmp_path)
    assert not ok and "asked for 2 GPUs but trained in 1 process" in markdown


def test_checklist_flags_missing_outputs(fake_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(fake_run, root)
    setting = vocab.Setting("digits", "resnet18", 0, "adversarial")
    cell = plan.cell_path(TINY, setting, "m100000")
    (root / cell).unlink()
    (root / "results" / "figures" / "cutoff_digits.pdf").unlink()
    (root / pretrain_benchmark(setting)).unlink()
    markdown, throughput, ok = checklist(TINY, root)
    assert not ok
    assert f"retrain did not produce {cell}" in markdown
    assert "figure did not produce results/figures/cutoff_digits.pdf" in markdown
    assert "## (d) training throughput: NOT OK" in markdown and throughput == {}
    assert "## (a) device and precision: ok" in markdown


def test_checklist_flags_wrong_device_and_corrupt_checkpoint(fake_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(fake_run, root)
    path = layout.pretrained_path(vocab.Setting("digits", "resnet18", 0, "conventional"))
    (root / path).write_bytes(b"not a checkpoint")
    markdown, _, ok = checklist({**TINY, "device": "cuda"}, root)
    assert not ok and "## (a) device and precision: NOT OK" in markdown
    assert f"{path}: unreadable checkpoint" in markdown
    assert "made on `cpu: test`, the config's device is `cuda`" in markdown
