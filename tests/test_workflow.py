"""The Snakemake workflow: lint, config validation, the paper's DAG, rerun triggers and an end-to-end run.

Tests work on copies of the repository in temporary folders (conftest: `repo_copy`, `tiny_run`), so touching
library files there never touches this checkout; the workflow imports the copy's src/ (verified below).
"""

from __future__ import annotations

import ast
import os
import re

import pandas as pd
import pytest
import yaml

from advlayers.grid import layout
from advlayers.grid.vocabulary import PRETRAININGS, Setting
from advlayers.io import read_table

from helpers import REPO, TARGETS, copy_of, dry_run, snakemake

SETTINGS = [Setting("digits", "resnet18", 0, p) for p in PRETRAININGS]

# --------------------------------------------------------------------------- static checks


def test_lint_is_clean(repo_copy):
    rc, out = snakemake(repo_copy, "--lint", check=False)
    assert rc == 0 and "Congratulations" in out, out[-3000:]


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
        (lambda c: c.update(seeds="zero"), "seeds"),
        (lambda c: c["datasets"]["mnist5k"]["eval"].update(steps="20"), "steps"),
        (lambda c: c["datasets"]["mnist5k"]["eval"].update(eps=8), "eps"),
        (lambda c: c["datasets"]["mnist5k"].update(archs=["resnet19"]), "resnet19"),
        (lambda c: c["datasets"].update(svhn=c["datasets"]["mnist5k"]), "svhn"),
        (lambda c: c["cutoffs"].update(before=[1, 7]), "7"),
        (lambda c: c["cutoffs"].update(after=[]), "after"),
        (lambda c: c["figures"].update(fig2="cifar10"), "figures.fig2"),
        (lambda c: c["analyses"]["layer_cutoff"].update(cutoffs=[1, 22]), "analyses.layer_cutoff.cutoffs"),
        (lambda c: c["analyses"]["reinit"].update(datasets=["cifar10"]), "analyses.reinit.datasets"),
        (lambda c: c["analyses"]["features"].update(methods=["pca"]), "pca"),
        (lambda c: c["analyses"]["module_subsets"].update(subsets=["1010"]), "1010"),
        # a missing dataset folder stops a real run, not a dry run: tests/test_faults.py (config_error_stops,
        # dry_run_lists_the_jobs_without_the_datasets)
    ],
    ids=["unknown-top-key", "unknown-eval-key", "unknown-recipe-field", "wrong-type-seeds", "wrong-type-steps",
         "eps-above-1", "unknown-arch", "unknown-dataset", "cutoff-7", "empty-cutoffs", "figure-of-unconfigured-dataset",
         "layer-cutoff-22", "reinit-unconfigured-dataset", "unknown-embedding", "bad-subset-mask"],
)
def test_bad_config_stops_before_any_job(repo_copy, tmp_path, edit, expected):
    bad = _bad_config(tmp_path, edit)
    rc, out = snakemake(repo_copy, "-n", "all_figures", "--configfile", str(bad), check=False)
    assert rc != 0
    assert expected in out, out[-3000:]
    assert not re.search(r"^rule \w+:$", out, re.M), "a job was scheduled despite the invalid config"
    assert not (repo_copy / "results").exists()


def test_paper_dag(repo_copy):
    """The paper's whole DAG resolves (dry run); cells shared by figures run once."""
    _, out = snakemake(repo_copy, "all_figures", "--configfile", "config/paper.yaml", "-n", "--quiet", "rules")
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    # 9 (dataset, arch) pairs: CIFAR-10 and Imagenette with 4 archs, ImageNet with ResNet-50
    assert counts["prepare_data"] == 3 and counts["pretrain"] == 9 * 2
    # 11 distinct cut-off cells per setting (before 6 = after 0) x 2 settings x 9 pairs, + Fig. 5 and Fig. 6 cells
    # of ResNet-18 on CIFAR-10 not already in the cut-off grid, both settings: 2 x (15 + 52)
    assert counts["retrain"] == 9 * 2 * 11 + 2 * (15 + 52)
    assert counts["evaluate"] == counts["retrain"] + counts["pretrain"]
    assert counts["reinit"] == 4 and counts["embed_features"] == 6 and counts["claims"] == 1
    jobs = dry_run(repo_copy, "fig2", "--configfile", "config/paper.yaml")
    outputs = [o for outs in jobs.values() for o in outs]
    nets = [o for o in outputs if o.startswith(("results/checkpoints/", "results/evaluations/"))]
    assert nets and all("/cifar10/" in o for o in nets), nets


def test_named_figure_not_configured(repo_copy):
    rc, out = snakemake(repo_copy, "-n", "fig3", check=False)
    assert rc != 0 and "fig3 is not mapped" in out, out[-2000:]


def test_every_computing_rule_has_log_and_benchmark():
    """`log:` and `benchmark:` on every rule that runs a script (the catalog's and the developers' convention);
    the only shell rule writes an empty marker."""
    rules = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):(.*?)(?=^rule |\Z)", path.read_text(), re.S | re.M):
            rules[m.group(1)] = m.group(2)
    computing = {name for name, body in rules.items() if "script:" in body or "run:" in body}
    assert len(computing) >= 15
    assert not [n for n in computing if "benchmark:" not in rules[n] or "log:" not in rules[n]]
    assert {name for name, body in rules.items() if "shell:" in body} == {"table_rebuild_marker"}


def test_workflow_catalog_file():
    """.snakemake-workflow-catalog.yml (the Snakemake workflow catalog's metadata): usage with the two commands
    of the README's set-up."""
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert catalog["usage"]["mandatory-flags"]["flags"] and "software-stack-deployment" in usage
    desc = usage["mandatory-flags"]["desc"]
    assert "pip install -c constraints.txt" in desc and "snakemake --cores 2 all_figures" in desc
    assert usage["report"] is True


def test_workflow_scripts_are_thin():
    """Scripts only wire snakemake.* to the library: no function or class definitions of their own."""
    for path in (REPO / "workflow" / "scripts").glob("*.py"):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text())
        assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))], path


# --------------------------------------------------------------------------- a real (tiny) run


@pytest.mark.slow
def test_end_to_end_tables_figures_and_claims(tiny_run):
    table = pd.read_parquet(tiny_run / "results" / "tables" / "cutoff.parquet")
    from advlayers.report.tables import EVAL_COLUMNS, PROVENANCE_COLUMNS

    assert set(EVAL_COLUMNS) | {"precision", "recipe", "torch_version", "device_name"} <= set(table.columns)
    assert set(PROVENANCE_COLUMNS) <= set(table.columns)
    # per setting: the pretrained reference, before 1, after 4
    assert len(table) == 2 * 3
    cells = table.set_index(["pretraining", "direction"])
    assert cells.loc[("conventional", "before"), "retraining"] == "adversarial"
    assert cells.loc[("adversarial", "after"), "retraining"] == "conventional"
    assert cells.loc[("conventional", "before"), "cell"] == "m100000"
    assert list(cells.loc[("adversarial", "after"), "retrained_modules"]) == ["m4", "m5"]
    assert (table["n_eval"] == 64).all() and (table["attack"] == "PGD-3").all()
    assert ((table["robust_acc_lo"] <= table["robust_acc"]) & (table["robust_acc"] <= table["robust_acc_hi"])).all()
    assert table["clean_acc"].between(0, 1).all() and (table["robust_acc"] <= table["clean_acc"]).all()
    assert (table["precision"] == "fp32").all() and table["recipe_digest"].str.len().eq(12).all()
    outcomes = pd.read_parquet(tiny_run / "results" / "tables" / "outcomes.parquet")
    assert len(outcomes) == 6 * 64 and outcomes.groupby(["pretraining", "cell"]).size().eq(64).all()
    # the default image part: confirmation images only, never the tuning part (docs/claims-v2.md)
    from advlayers.core.datasets import load_dataset
    from advlayers.core.splits import image_part

    assert (table["image_part"] == "confirmation").all() and (outcomes["image_part"] == "confirmation").all()
    tuning = set(image_part(load_dataset("digits").test, "tuning", "digits").index.tolist())
    assert not tuning & set(outcomes["test_index"])
    for ext in ("png", "pdf"):
        assert (tiny_run / "results" / "figures" / f"cutoff_digits.{ext}").stat().st_size > 1000
    claims = pd.read_parquet(tiny_run / "results" / "tables" / "claims.parquet")
    from advlayers.report import claim_rules_v2

    assert set(claims["verdict"]) <= {*claim_rules_v2.VERDICTS, *claim_rules_v2.CONTROL_VERDICTS}
    assert (claims["rules_version"] == "v2").all() and set(claim_rules_v2.EXTRA_COLUMNS) <= set(claims.columns)
    assert set(claims["image_part"]) <= {"tuning", "confirmation", "unrecorded"}
    assert (claims.loc[claims["claim"] == "C3a", "verdict"] == "not run").all()  # no before-cut-off 2 here
    # no before-cut-off 6 here: the controls are not run, the claims that need them are confounded or not run
    assert (claims.loc[claims["claim"].isin(["A", "B"]), "verdict"] == "not run").all()
    assert set(claims.loc[claims["claim"].isin(["C1a", "C2", "C4"]), "verdict"]) <= {"confounded", "not testable"}
    text = (tiny_run / "results" / "claims.md").read_text()
    assert "# Does this run reproduce the paper?" in text and "hold family-wise" in text
    # training curves: every epoch of every trained net (2 pretrained nets, 4 cells), from their checkpoints
    curves = read_table(tiny_run / "results" / "tables" / "training_curves.parquet")
    nets = curves.groupby(["pretraining", "cell"])["epoch"].agg(list)
    assert len(nets) == 2 + 4 and all(epochs == list(range(1, len(epochs) + 1)) for epochs in nets)
    assert curves["loss"].gt(0).all() and curves["train_acc"].between(0, 1).all()
    # eval_each_epoch (tests/tiny.yaml): each epoch's held-out clean and PGD-3 accuracy of 32 tuning images
    assert curves["heldout_clean_acc"].between(0, 1).all() and curves["heldout_robust_acc"].between(0, 1).all()
    assert set(curves["heldout_attack"]) == {"PGD-3"} and set(curves["heldout_n"]) == {32}
    assert (tiny_run / "results" / "figures" / "training_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_jobs_ran_the_copied_library(tiny_run):
    log = (tiny_run / layout.log_path("evaluate", f"{layout.job_id(SETTINGS[0])}/pretrained")).read_text()
    assert f"library {tiny_run / 'src'}" in log


@pytest.mark.slow
def test_nothing_to_do_after_a_run(tiny_run):
    assert dry_run(tiny_run, *TARGETS, "--configfile", "tiny.yaml") == {}


def _jobs_after_edit(root, relpath, *args, configfile="tiny.yaml"):
    """Dry-run jobs after a change to one file (content and mtime restored afterwards; `args` for the dry run).

    Snakemake 9 reruns a job for a newer input only if the input's content differs from the checksum it
    recorded, so the edit changes the content (a comment), not just the modification time.
    """
    path = root / relpath
    st, original = path.stat(), path.read_text()
    newer = max(p.stat().st_mtime for p in (root / "results").rglob("*") if p.is_file()) + 10
    path.write_text(original + "\n# changed\n")
    os.utime(path, (newer, newer))
    try:
        return dry_run(root, *TARGETS, "--configfile", configfile, *args)
    finally:
        path.write_text(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


DOWNSTREAM_OF_EVAL = {"table", "figure", "claims", "all_figures"}


@pytest.fixture(scope="module")
def scratch_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run for the tests below, which edit files (and restore them): `tiny_run` is read-only."""
    return copy_of(tiny_run, tmp_path_factory.mktemp("scratch") / "run")


@pytest.mark.slow
@pytest.mark.parametrize(
    "library_file, rules",
    [
        ("report/figures/cutoff.py", {"figure", "all_figures"}),
        ("report/claims.py", {"claims", "all_figures"}),
        ("report/tables.py", DOWNSTREAM_OF_EVAL),
        # training jobs too: tests/tiny.yaml turns on the per-epoch held-out evaluation, which runs inside them
        ("core/evaluation.py", {"pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("core/training.py", {"pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("core/attacks.py", {"pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("core/datasets.py", {"prepare_data", "pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("jobs/retrain.py", {"retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
        ("grid/layout.py", {"prepare_data", "pretrain", "retrain", "evaluate"} | DOWNSTREAM_OF_EVAL),
    ],
)
def test_library_change_reruns_its_users(scratch_run, library_file, rules):
    jobs = _jobs_after_edit(scratch_run, f"src/advlayers/{library_file}")
    assert set(jobs) == rules


@pytest.mark.slow
def test_evaluation_change_reruns_no_training_where_eval_each_epoch_is_off(scratch_run):
    """Training jobs depend on the evaluation code only where they run the per-epoch held-out evaluation (the tiny
    run has it on: above, they rerun). Off, an edit of core/evaluation.py reruns evaluations only. Mtime triggers
    alone here: turning it off changes the training jobs' params, which would rerun them whatever the inputs."""
    config = yaml.safe_load((scratch_run / "tiny.yaml").read_text())
    del config["datasets"]["digits"]["eval_each_epoch"]
    (scratch_run / "tiny_off.yaml").write_text(yaml.safe_dump(config))
    on = _jobs_after_edit(scratch_run, "src/advlayers/core/evaluation.py", "--rerun-triggers", "mtime")
    off = _jobs_after_edit(scratch_run, "src/advlayers/core/evaluation.py", "--rerun-triggers", "mtime",
                           configfile="tiny_off.yaml")
    assert {"pretrain", "retrain", "evaluate"} <= set(on)
    assert set(off) == {"evaluate"} | DOWNSTREAM_OF_EVAL


def _with_config(root, edit):
    config = yaml.safe_load((root / "tiny.yaml").read_text())
    edit(config)
    (root / "tiny_edit.yaml").write_text(yaml.safe_dump(config))
    return dry_run(root, *TARGETS, "--configfile", "tiny_edit.yaml")


@pytest.mark.slow
def test_eval_setting_change_reruns_only_evaluations(scratch_run):
    jobs = _with_config(scratch_run, lambda c: c["datasets"]["digits"]["eval"].update(steps=4))
    assert set(jobs) == {"evaluate"} | DOWNSTREAM_OF_EVAL
    assert len(jobs["evaluate"]) == 2 * 6  # records + outcomes of 6 evaluation jobs


@pytest.mark.slow
def test_retrain_recipe_change_reruns_only_retraining(scratch_run):
    jobs = _with_config(scratch_run, lambda c: c["datasets"]["digits"].update(retrain_overrides={"lr": 5e-4}))
    assert set(jobs) == {"retrain", "evaluate"} | DOWNSTREAM_OF_EVAL
    assert len(jobs["retrain"]) == 4 and len(jobs["evaluate"]) == 2 * 4


@pytest.mark.slow
def test_added_cutoff_runs_only_new_cells(scratch_run):
    jobs = _with_config(scratch_run, lambda c: c["cutoffs"].update(before=[1, 2]))
    assert set(jobs) == {"retrain", "evaluate"} | DOWNSTREAM_OF_EVAL
    assert sorted(jobs["retrain"]) == sorted(layout.group_dir(s, "m110000") for s in SETTINGS)


@pytest.mark.slow
def test_shared_cells_are_not_retrained(scratch_run):
    """Fig. 5 and Fig. 6 cells that the cut-off experiment already computed are reused, not retrained."""
    def analyses(c):
        c["analyses"] = {"layer_cutoff": {"dataset": "digits", "arch": "resnet18", "cutoffs": [1, 7],
                                          "pretrainings": ["conventional"]},
                         "module_subsets": {"dataset": "digits", "arch": "resnet18", "pretrainings": ["conventional"],
                                            "subsets": ["100000", "000011", "010000"]}}

    jobs = _with_config(scratch_run, analyses)
    # layer cut-off 1 = subset 100000 = before 1 and subset 000011 = after 4 exist: only l0-7 and m010000 are new
    assert sorted(jobs["retrain"]) == [layout.group_dir(SETTINGS[0], "l0-7"), layout.group_dir(SETTINGS[0], "m010000")]


@pytest.mark.slow
def test_script_change_reruns_its_rule(scratch_run):
    jobs = _jobs_after_edit(scratch_run, "workflow/scripts/figure.py")
    assert set(jobs) == {"figure", "all_figures"}


@pytest.mark.slow
def test_touched_but_unchanged_library_reruns_nothing(scratch_run):
    """A newer modification time alone (git checkout, copy) is no change: Snakemake compares checksums."""
    path = scratch_run / "src" / "advlayers" / "core" / "training.py"
    st = path.stat()
    os.utime(path, (st.st_atime + 3600, st.st_mtime + 3600))
    try:
        assert dry_run(scratch_run, *TARGETS, "--configfile", "tiny.yaml") == {}
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


TINY_ANALYSES = {
    "layer_cutoff": {"dataset": "digits", "arch": "resnet18", "cutoffs": [1, 3, 21], "pretrainings": ["conventional"]},
    "module_subsets": {"dataset": "digits", "arch": "resnet18", "subsets": ["100000", "000011", "110000"],
                       "pretrainings": ["conventional", "adversarial"]},
    "reinit": {"datasets": ["digits"], "arch": "resnet18", "eval": {"n": 16, "steps": 2}, "bn_policies": ["reset"]},
    "features": {"dataset": "digits", "arch": "resnet18", "n_images": 12, "vectors_per_image": 4, "methods": ["tsne"],
                 "embedding": {"max_points": 80}, "divergence": {"max_points": 40, "n_permutations": 20}},
}


@pytest.mark.slow
def test_analyses_end_to_end(tiny_run, tmp_path):
    """Fig. 5-8 on a copy of the tiny run: they reuse its pretrained nets and shared cells."""
    root = copy_of(tiny_run, tmp_path / "run")
    config = yaml.safe_load((root / "tiny.yaml").read_text())
    config["analyses"] = TINY_ANALYSES
    (root / "tiny_analyses.yaml").write_text(yaml.safe_dump(config))
    targets = ("fig5", "fig6", "fig7", "fig8", "tables", "claims", "--configfile", "tiny_analyses.yaml")
    jobs = dry_run(root, *targets)
    assert "pretrain" not in jobs
    snakemake(root, *targets, "--cores", "2")
    tables = root / "results" / "tables"
    layer = pd.read_parquet(tables / "layer_cutoff.parquet").set_index("layer_cutoff")
    assert sorted(layer.index) == [0, 1, 3, 21] and layer.loc[3, "cell"] == "l0-3"
    assert layer.loc[0, "cell"] == "pretrained" and list(layer.loc[21, "retrained_modules"]) == [f"m{i}" for i in range(6)]
    subsets = pd.read_parquet(tables / "module_subsets.parquet")
    assert sorted(subsets["subset"].unique()) == ["000000", "000011", "100000", "110000"]
    assert set(subsets["pretraining"]) == {"conventional", "adversarial"}
    reinit = pd.read_parquet(tables / "reinit.parquet")
    # per pretrained net: the original + 21 layers x (rewind, redraw)
    assert sorted(reinit.groupby("pretraining").size()) == [43, 43]
    assert set(reinit["operation"]) == {"none", "rewind", "redraw"} and "layer2.0.downsample.0" in set(reinit["layer"])
    div = pd.read_parquet(tables / "feature_divergence.parquet")
    assert len(div) == 8 and div["detector_auroc"].between(0, 1).all() and div["mmd_p_value"].between(0, 1).all()
    for stem in ("layer_cutoff", "module_subsets", "reinit", "features_tsne", "feature_divergence"):
        assert (root / "results" / "figures" / f"{stem}.png").stat().st_size > 1000
    claims = pd.read_parquet(tables / "claims.parquet")
    # C7a (v2) is not run when no rewound m0-m1 layer keeps clean accuracy >= 0.5, as it may in a one-epoch net
    assert {"C5a", "C6a", "C7c", "C8a"} <= set(claims.loc[claims["verdict"] != "not run", "claim"])
    assert {"C7a", "A", "B"} <= set(claims["claim"])
    assert dry_run(root, *targets) == {}


@pytest.mark.slow
def test_autoattack_beside_pgd(tiny_run, tmp_path):
    """`datasets.<name>.autoattack`: AutoAttack of the chosen nets on the first images of PGD's subset, and the
    robustness_gap table comparing them image by image."""
    root = copy_of(tiny_run, tmp_path / "run")
    config = yaml.safe_load((root / "tiny.yaml").read_text())
    config["datasets"]["digits"]["autoattack"] = {"n": 8, "cells": ["pretrained", "m100000"]}
    (root / "tiny_aa.yaml").write_text(yaml.safe_dump(config))
    jobs = dry_run(root, "tables", "--configfile", "tiny_aa.yaml")
    assert len(jobs["evaluate_autoattack"]) == 2 * 2 and "retrain" not in jobs  # records + outcomes per setting
    snakemake(root, "tables", "--cores", "2", "--configfile", "tiny_aa.yaml")
    gap = pd.read_parquet(root / "results" / "tables" / "robustness_gap.parquet")
    assert len(gap) == 4 and (gap["n_images"] == 8).all() and (gap["autoattack"] == "AutoAttack-standard").all()
    assert (gap["autoattack_robust_acc"] <= gap["pgd_robust_acc"] + 1e-9).all()
    assert set(gap.columns) >= {"robustness_gap", "gap_lo", "gap_hi", "possible_gradient_masking"}
