"""advlayers.grid: the vocabulary matches the library, cells are canonical and shared, batches are stable, and
the cost model, the workflow and the grid agree on every job."""

from __future__ import annotations

import re

import pytest
import yaml

from advlayers.tools import cost
from advlayers.grid import plan, validate, vocabulary as vocab
from advlayers.core.models import build_model, layers
from advlayers.core.recipes import PRESETS, Recipe

from conftest import REPO, snakemake

DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def test_grid_imports_no_torch():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, advlayers.grid, advlayers.recipes, advlayers.cost; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_module_layers_match_the_models():
    for arch, counts in vocab.MODULE_LAYERS.items():
        found = [layer.module for layer in layers(build_model(arch, 10, 32, width=0.25))]
        assert tuple(found.count(m) for m in vocab.MODULE_NAMES) == counts, arch


def test_schema_enums_match_the_grid():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    ds = schema["definitions"]["dataset"]["properties"]
    assert ds["archs"]["items"]["enum"] == list(vocab.ARCHS)
    assert sorted(ds["recipe"]["enum"]) == sorted(PRESETS)
    assert schema["properties"]["datasets"]["propertyNames"]["enum"] == list(vocab.DATASETS)
    assert set(schema["properties"]["analyses"]["properties"]) == set(vocab.ANALYSES)
    from dataclasses import fields

    assert set(schema["definitions"]["recipe_overrides"]["properties"]) == {f.name for f in fields(Recipe)}


def test_cells_are_canonical():
    # 'before 2' == layer cut-off 5 == subset 110000 for resnet18 (m0 has 1 layer, m1 4)
    assert vocab.cell_of_mask(vocab.cutoff_mask(2, "before")) == "m110000"
    assert vocab.cell_of_layers("resnet18", vocab.layer_range("resnet18", 5)) == "m110000"
    assert vocab.cell_of_layers("resnet18", vocab.layer_range("resnet18", 7)) == "l0-7"
    assert vocab.cell_of_layers("resnet18", vocab.layer_range("resnet18", 21)) == "m111111"
    assert vocab.cell_of_mask(vocab.cutoff_mask(0, "after")) == vocab.cell_of_mask(vocab.cutoff_mask(6, "before"))
    assert vocab.cell_of_mask("000000") is None
    assert vocab.cell_layers("resnet18", "m010000") == [1, 2, 3, 4]
    assert vocab.cell_modules("resnet18", "l0-7") == ["m0", "m1", "m2"]
    with pytest.raises(vocab.ConfigError, match="0/1"):
        vocab.mask_modules("1010")


def test_cells_are_shared_between_figures():
    cells = plan.cells(DEMO)
    conv = cells[vocab.Setting("mnist5k", "resnet18", 0, "conventional")]
    assert len(conv) == len(set(conv))
    # Fig. 2's 8 cells, the 4 subsets of m0..m2 not among them, and the 2 layer cut-offs not module-aligned
    # (k = 3, 7); layer cut-offs 1, 5, 10, 21 and subsets 100000, 110000, 111000 are Fig. 2 cells
    assert len(conv) == 8 + 4 + 2
    paper = plan.cells(PAPER)
    cifar = paper[vocab.Setting("cifar10", "resnet18", 0, "conventional")]
    # 63 subsets + 21 layer cut-offs of which 6 are module-aligned
    assert len(cifar) == 63 + 15
    # before 6 and after 0 are one cell
    vgg = paper[vocab.Setting("cifar10", "vgg11_bn", 0, "adversarial")]
    assert len(vgg) == 11


def test_batches_are_stable_when_cells_are_added():
    config = {**DEMO, "batching": {"jobs_per_setting": 3}}
    before = plan.groups(config)
    more = {**config, "cutoffs": {"before": [1, 2, 3, 4, 6], "after": [1, 2, 3, 4]}}
    after = plan.groups(more)
    setting = vocab.Setting("mnist5k", "resnet18", 0, "adversarial")
    changed = [b for b in after[setting] if after[setting][b] != before[setting].get(b)]
    assert len(changed) == 1 and "m111100" in after[setting][changed[0]]
    assert plan.groups({**DEMO, "batching": {}})[setting] == {c: [c] for c in plan.cells(DEMO)[setting]}


def test_cutoff_figure_needs_only_its_own_batches():
    """With batching, `snakemake fig2` trains the cut-off figure's cells only; Fig. 5/6's other cells are in
    their own jobs, which the cut-off tables do not read."""
    setting = vocab.Setting("mnist5k", "resnet18", 0, "conventional")
    groups = plan.groups(DEMO)[setting]
    figure = plan.figure_cells(DEMO, setting)
    assert {c for b, cells in groups.items() if b.startswith("batch") for c in cells} == figure
    analysis_only = {c for b, cells in groups.items() if b.startswith("analysis") for c in cells}
    assert analysis_only and not analysis_only & figure and "l0-3" in analysis_only
    for table in ("cutoff", "cutoff_mnist5k"):
        assert not [p for p in plan.table_inputs(DEMO, table) if "_analysis" in p]
    assert [p for p in plan.table_inputs(DEMO, "layer_cutoff") if "_analysis" in p]
    assert "results/claims/cutoff_mnist5k.md" in plan.named_figure(DEMO, "fig2")


def test_batched_evaluation_is_one_job_per_kind_of_batch():
    """With batching, a net's cells are evaluated in one job with the pretrained net (the cut-off figure's
    batches) and one more (the analysis batches): every net once, fig2 without analysis cells. Without
    batching, one job per pretrained net and per cell, as before."""
    for setting, groups in plan.groups(DEMO).items():
        units = plan.evaluation_units(DEMO, setting)
        p = setting.pretraining
        assert sorted(m for members in units.values() for m in members) == sorted(["pretrain", *groups])
        assert set(units[f"nets_{p}_cutoff"]) == {"pretrain"} | {b for b in groups if b.startswith("batch")}
        assert set(units.get(f"nets_{p}_analysis", [])) == {b for b in groups if b.startswith("analysis")}
    s = vocab.Setting("mnist5k", "resnet18", 0, "adversarial")
    unbatched = {**DEMO, "batching": {}}
    assert plan.evaluation_units(unbatched, s) == {"pretrain_adversarial": ["pretrain"],
                                                   **{f"retrain_adversarial_{c}": [c] for c in plan.cells(DEMO)[s]}}
    with pytest.raises(vocab.ConfigError, match="nets_adversarial_cutoff"):
        grid.evaluation_members(DEMO, s, "pretrain_adversarial")
    n_cells = sum(len(c) for c in plan.cells(DEMO).values())
    assert plan.job_counts(DEMO)["evaluate"] == 3 and plan.job_counts(unbatched)["evaluate"] == 2 + n_cells


def test_table_coordinates_name_every_cell():
    rows = plan.table_coordinates(PAPER, "cutoff")
    cifar = [r for r in rows if r["dataset"] == "cifar10" and r["arch"] == "resnet18" and r["pretraining"] == "conventional"]
    assert {(r["direction"], r["cutoff"]) for r in cifar} >= {("before", 6), ("after", 0), ("none", None)}
    cell = {(r["direction"], r["cutoff"]): r["cell"] for r in cifar}
    assert cell[("before", 6)] == cell[("after", 0)] == "m111111" and cell[("none", None)] == "pretrained"
    subsets = plan.table_coordinates(PAPER, "module_subsets")
    assert len(subsets) == 2 * 64 and {r["cell"] for r in subsets if r["subset"] == "000000"} == {"pretrained"}


def _job_stats(root, *config_args) -> dict[str, int]:
    _, out = snakemake(root, "-n", "all_figures", *config_args)
    table = out[out.index("Job stats:"):].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_cost_model_and_workflow_agree_on_every_job(repo_copy, configfile):
    stats = _job_stats(repo_copy, "--configfile", configfile)
    config = yaml.safe_load((REPO / configfile).read_text())
    assert cost.job_counts(config) == {rule: stats.get(rule, 0) for rule in cost.STAGES}
    assert plan.job_counts(config)["retrain"] == sum(len(b) for b in plan.groups(config).values())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["cutoffs"].update(before=[]), "cutoffs.before"),
    (lambda c: c["analyses"]["features"].update(arch="vgg11_bn"), "analyses.features.arch"),
    (lambda c: c["datasets"]["mnist5k"]["eval"].pop("steps"), "needs steps"),
])
def test_validate_names_the_key(edit, message):
    import copy

    config = copy.deepcopy(DEMO)
    edit(config)
    with pytest.raises(vocab.ConfigError, match=message):
        validate.check(config, tuple(PRESETS))


def test_missing_dataset_root_is_named(tmp_path):
    with pytest.raises(vocab.ConfigError, match=r"datasets.cifar10.root = .* does not exist"):
        validate.check_root("cifar10", str(tmp_path / "nowhere"))
    (tmp_path / "cifar").mkdir()
    with pytest.raises(vocab.ConfigError, match="lacks data_batch_1"):
        validate.check_root("cifar10", str(tmp_path / "cifar"))
    with pytest.raises(vocab.ConfigError, match="is not set"):
        validate.check_root("imagenet", None)
