"""The Snakemake workflow: lint, config validation, the paper's DAG, rerun triggers and an end-to-end run.

The invalidation and end-to-end tests work on a copy of the repository in a temporary folder (Snakefile,
workflow/, config/, envs/, src/), so touching library files there never touches this checkout. The
workflow scripts import the copy's src/ (workflow/scripts/_common.py), so the copy is self-contained.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny.yaml"
COPIED = ("Snakefile", "workflow", "config", "envs", "src")
TARGETS = ("all_figures", "tables")


def snakemake(cwd, *args, check=True, timeout=600):
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-5000:]}")
    return proc.returncode, out


def dry_run(cwd, *args):
    """{rule: [outputs]} of the jobs a dry run would execute ({} when there is nothing to do)."""
    _, out = snakemake(cwd, "-n", *args)
    if "Nothing to be done" in out:
        return {}
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.strip().startswith("output:"):
            jobs[rule] += [p.strip() for p in line.split(":", 1)[1].split(",")]
    assert jobs, f"could not parse the dry run:\n{out[-3000:]}"
    return jobs


def copy_repo(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst / name)
    shutil.copy2(TINY, dst / "tiny.yaml")
    return dst


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A copy of the repository where the tiny workflow has run once (all figures and tables)."""
    root = copy_repo(tmp_path_factory.mktemp("tiny"))
    snakemake(root, *TARGETS, "--cores", "2", "--configfile", "tiny.yaml")
    return root


# --------------------------------------------------------------------------- static checks


def test_lint_is_clean(repo_copy):
    rc, out = snakemake(repo_copy, "--lint", check=False)
    assert rc == 0 and "Congratulations" in out, out[-3000:]


def _schema():
    return yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def _library_names(module, variable):
    from importlib import import_module

    value = getattr(import_module(f"advlayers.{module}"), variable)
    return list(value)


def test_schema_enums_match_the_library():
    schema = _schema()
    ds = schema["definitions"]["dataset"]["properties"]
    assert ds["archs"]["items"]["enum"] == _library_names("models", "ARCHS")
    assert sorted(ds["recipe"]["enum"]) == sorted(_library_names("training", "PRESETS"))
    assert schema["properties"]["datasets"]["propertyNames"]["enum"] == _library_names("datasets", "DATASETS")
    from dataclasses import fields

    from advlayers.training import Recipe

    assert set(schema["definitions"]["recipe_overrides"]["properties"]) == {f.name for f in fields(Recipe)}


def test_embedded_and_paper_configs_are_valid(repo_copy):
    for args in ((), ("--configfile", "config/paper.yaml")):
        snakemake(repo_copy, "all_figures", *args, "-n", "--quiet", "rules")


def _bad_config(tmp_path, edit):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c.update(learning_rate=0.1), "learning_rate"),
        (lambda c: c["datasets"]["mnist5k"]["eval"].update(sample=10), "sample"),
        (lambda c: c["datasets"]["mnist5k"]["recipe_overrides"].update(epoch=3), "epoch"),
        (lambda c: c.update(seed="zero"), "seed"),
        (lambda c: c["datasets"]["mnist5k"]["eval"].update(steps="20"), "steps"),
        (lambda c: c["datasets"]["mnist5k"].update(archs=["resnet19"]), "resnet19"),
        (lambda c: c["datasets"].update(svhn=c["datasets"]["mnist5k"]), "svhn"),
        (lambda c: c["cutoffs"].update(before=[1, 7]), "7"),
        (lambda c: c["figures"].update(fig2="cifar10"), "figures.fig2"),
        (lambda c: c["analyses"]["layer_cutoff"].update(cutoffs=[1, 22]), "analyses.layer_cutoff.cutoffs"),
        (lambda c: c["analyses"]["reinit"].update(datasets=["cifar10"]), "analyses.reinit.datasets"),
        (lambda c: c["analyses"]["features"].update(methods=["pca"]), "pca"),
        (lambda c: c["analyses"]["combinations"].update(subsets=["1010"]), "1010"),
    ],
    ids=["unknown-top-key", "unknown-eval-key", "unknown-recipe-field", "wrong-type-seed", "wrong-type-steps",
         "unknown-arch", "unknown-dataset", "cutoff-7", "figure-of-unconfigured-dataset", "layer-cutoff-22",
         "reinit-unconfigured-dataset", "unknown-embedding", "bad-subset-mask"],
)
def test_bad_config_stops_before_any_job(repo_copy, tmp_path, edit, expected):
    bad = _bad_config(tmp_path, edit)
    rc, out = snakemake(repo_copy, "-n", "all_figures", "--configfile", str(bad), check=False)
    assert rc != 0
    assert expected in out, out[-3000:]
    assert not re.search(r"^rule \w+:$", out, re.M), "a job was scheduled despite the invalid config"
    assert not (repo_copy / "results").exists()


def test_paper_dag(repo_copy):
    """The paper's whole DAG resolves (dry run) with the expected number of jobs per stage."""
    _, out = snakemake(repo_copy, "all_figures", "--configfile", "config/paper.yaml", "-n", "--quiet", "rules")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # 9 (dataset, arch) pairs: CIFAR-10 and Imagenette with 4 archs, ImageNet with ResNet-50;
    # 4 settings x 6 cut-offs = 24 retrained nets per pair.
    assert counts["prepare_data"] == "3"
    assert counts["pretrain"] == str(9 * 2)
    assert counts["retrain"] == str(9 * 24)
    # + the analyses: 21 per-layer cut-offs and 64 module subsets of ResNet-18 on CIFAR-10
    assert counts["evaluate"] == str(9 * 26 + 21 + 64)
    assert counts["retrain_layers"] == "21" and counts["retrain_subset"] == "64"
    assert counts["reinit"] == "4" and counts["embed_features"] == "6"
    assert counts["figure"] == "3"
    # `snakemake fig2` builds only CIFAR-10's figure.
    jobs = dry_run(repo_copy, "fig2", "--configfile", "config/paper.yaml")
    outputs = [o for outs in jobs.values() for o in outs]
    assert outputs and all("cifar10" in o for o in outputs), outputs
    assert len(jobs["evaluate"]) == 4 * 26


def test_named_figure_not_configured(repo_copy):
    rc, out = snakemake(repo_copy, "-n", "fig3", check=False)
    assert rc != 0 and "fig3 is not mapped" in out, out[-2000:]


# --------------------------------------------------------------------------- a real (tiny) run


@pytest.mark.slow
def test_end_to_end_table_and_figures(tiny_run):
    table = pd.read_parquet(tiny_run / "results" / "tables" / "cutoff.parquet")
    from advlayers.tables import CUTOFF_COLUMNS

    assert list(table.columns) == list(CUTOFF_COLUMNS)
    # 2 pretrained nets + 4 settings x 1 cut-off
    assert len(table) == 6
    pre = table[table["retraining"] == "none"]
    assert sorted(pre["pretraining"]) == ["adversarial", "conventional"] and pre["cutoff"].isna().all()
    cells = table[table["retraining"] != "none"].set_index(["pretraining", "direction"])
    assert cells.loc[("conventional", "before"), "retraining"] == "adversarial"
    assert cells.loc[("adversarial", "after"), "retraining"] == "conventional"
    assert list(cells.loc[("conventional", "before"), "retrained_modules"]) == ["m0"]
    assert list(cells.loc[("adversarial", "after"), "retrained_modules"]) == ["m4", "m5"]
    assert (table["n_eval"] == 64).all() and (table["attack"] == "PGD-3").all()
    assert table["clean_acc"].between(0, 1).all() and (table["robust_acc"] <= table["clean_acc"]).all()
    for ext in ("png", "pdf"):
        assert (tiny_run / "results" / "figures" / f"cutoff_digits.{ext}").stat().st_size > 1000
    assert pd.read_parquet(tiny_run / "results" / "tables" / "cutoff_digits.parquet").equals(table)


@pytest.mark.slow
def test_nothing_to_do_after_a_run(tiny_run):
    assert dry_run(tiny_run, *TARGETS, "--configfile", "tiny.yaml") == {}


def _jobs_after_edit(root, relpath):
    """Dry-run jobs after a change to one file (content and mtime restored afterwards).

    Snakemake 9 reruns a job for a newer input only if the input's content differs from the checksum it
    recorded, so the edit changes the content (a comment), not just the modification time.
    """
    path = root / relpath
    st, original = path.stat(), path.read_text()
    newer = max(p.stat().st_mtime for p in (root / "results").rglob("*") if p.is_file()) + 10
    path.write_text(original + "\n# changed\n")
    os.utime(path, (newer, newer))
    try:
        return dry_run(root, *TARGETS, "--configfile", "tiny.yaml")
    finally:
        path.write_text(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


DOWNSTREAM_OF_EVAL = {"table_dataset", "table", "figure", "all_figures", "tables"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "library_file, rules",
    [
        ("plots.py", {"figure", "all_figures"}),
        ("tables.py", {"table_dataset", "table", "figure", "all_figures", "tables"}),
        ("evaluation.py", {"evaluate"} | DOWNSTREAM_OF_EVAL),
        ("training.py", {"pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("attacks.py", {"pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("datasets.py", {"prepare_data", "pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
    ],
)
def test_library_change_reruns_its_users(tiny_run, library_file, rules):
    jobs = _jobs_after_edit(tiny_run, f"src/advlayers/{library_file}")
    assert set(jobs) == rules


def _with_config(root, edit):
    config = yaml.safe_load((root / "tiny.yaml").read_text())
    edit(config)
    (root / "tiny_edit.yaml").write_text(yaml.safe_dump(config))
    return dry_run(root, *TARGETS, "--configfile", "tiny_edit.yaml")


@pytest.mark.slow
def test_eval_setting_change_reruns_only_evaluations(tiny_run):
    jobs = _with_config(tiny_run, lambda c: c["datasets"]["digits"]["eval"].update(steps=4))
    assert set(jobs) == {"evaluate"} | DOWNSTREAM_OF_EVAL
    assert len(jobs["evaluate"]) == 6


@pytest.mark.slow
def test_retrain_recipe_change_reruns_only_retraining(tiny_run):
    jobs = _with_config(tiny_run, lambda c: c["datasets"]["digits"].update(retrain_overrides={"lr": 5e-4}))
    assert set(jobs) == {"retrain", "evaluate"} | DOWNSTREAM_OF_EVAL
    assert len(jobs["retrain"]) == 4 and len(jobs["evaluate"]) == 4


@pytest.mark.slow
def test_added_cutoff_runs_only_new_cells(tiny_run):
    jobs = _with_config(tiny_run, lambda c: c["cutoffs"].update(before=[1, 2]))
    assert set(jobs) == {"retrain", "evaluate"} | DOWNSTREAM_OF_EVAL
    ckpt = "results/checkpoints/digits/resnet18"
    assert sorted(jobs["retrain"]) == [f"{ckpt}/retrain_adversarial_before2.pt", f"{ckpt}/retrain_conventional_before2.pt"]
    assert len(jobs["evaluate"]) == 2


@pytest.mark.slow
def test_script_change_reruns_its_rule(tiny_run):
    jobs = _jobs_after_edit(tiny_run, "workflow/scripts/figure.py")
    assert set(jobs) == {"figure", "all_figures"}


@pytest.mark.slow
def test_touched_but_unchanged_library_reruns_nothing(tiny_run):
    """A newer modification time alone (git checkout, copy) is no change: Snakemake compares checksums."""
    path = tiny_run / "src" / "advlayers" / "training.py"
    st = path.stat()
    os.utime(path, (st.st_atime + 3600, st.st_mtime + 3600))
    try:
        assert dry_run(tiny_run, *TARGETS, "--configfile", "tiny.yaml") == {}
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_workflow_scripts_are_thin():
    """Scripts only wire snakemake.* to the library: no function or class definitions of their own."""
    for path in (REPO / "workflow" / "scripts").glob("*.py"):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text())
        assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], path


def test_layer_counts_match_the_library():
    from advlayers.models import ARCHS, build_model, layers

    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    counts = ast.literal_eval(re.search(r"^LAYER_COUNTS = (\{.*\})$", text, re.M).group(1))
    assert counts == {arch: len(layers(build_model(arch, 10, 32))) for arch in ARCHS}


TINY_ANALYSES = {
    "layer_cutoff": {"dataset": "digits", "arch": "resnet18", "cutoffs": [1, 21], "eval": {"n": 32}},
    "combinations": {"dataset": "digits", "arch": "resnet18", "subsets": ["000000", "100000", "000011"],
                     "eval": {"n": 32}},
    "reinit": {"datasets": ["digits"], "arch": "resnet18", "eval": {"n": 16, "steps": 2}},
    "features": {"dataset": "digits", "arch": "resnet18", "n_images": 12, "vectors_per_image": 4, "methods": ["tsne"],
                 "embedding": {"max_points": 80}, "divergence": {"max_points": 40, "n_permutations": 20}},
}


@pytest.mark.slow
def test_analyses_end_to_end(tiny_run):
    """Fig. 5-8 on the tiny run: they reuse its pretrained nets, so only the analysis jobs run."""
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    config["analyses"] = TINY_ANALYSES
    (tiny_run / "tiny_analyses.yaml").write_text(yaml.safe_dump(config))
    targets = ("fig5", "fig6", "fig7", "fig8", "tables", "--configfile", "tiny_analyses.yaml")
    jobs = dry_run(tiny_run, *targets)
    assert "pretrain" not in jobs and "retrain" not in jobs
    snakemake(tiny_run, *targets, "--cores", "2")
    tables = tiny_run / "results" / "tables"
    layer = pd.read_parquet(tables / "layer_cutoff.parquet")
    cells = layer[layer["retraining"] != "none"].set_index("cutoff")
    assert sorted(cells.index) == [1, 21] and list(cells.loc[1, "retrained_modules"]) == ["m0"]
    assert list(cells.loc[21, "retrained_modules"]) == [f"m{i}" for i in range(6)]
    combos = pd.read_parquet(tables / "combinations.parquet")
    assert sorted(combos["subset"]) == ["000000", "000011", "100000"]
    reinit = pd.read_parquet(tables / "reinit.parquet")
    # per pretrained net: the original + 21 layers x (re-init, re-rand)
    assert sorted(reinit.groupby("pretrain").size()) == [43, 43]
    assert set(reinit["how"]) == {"none", "reinit", "rerandomize"}
    div = pd.read_parquet(tables / "feature_divergence.parquet")
    assert len(div) == 8 and div["detector_auroc"].between(0, 1).all() and div["mmd_p_value"].between(0, 1).all()
    for stem in ("layer_cutoff", "combinations", "reinit", "features_tsne", "feature_divergence"):
        assert (tiny_run / "results" / "figures" / f"{stem}.png").stat().st_size > 1000
    assert dry_run(tiny_run, *targets) == {}
