"""advlayers.grid: the vocabulary matches the library, cells are canonical and shared, groups are stable, every
path and id is built and parsed by the layout alone, and the cost model, the workflow and the grid agree on every
job."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from advlayers.tools import cost, sizing
from advlayers.grid import conf, layout, plan, validate, vocabulary as vocab
from advlayers.report import tables
from advlayers.core.models import build_model, layers
from advlayers.core.recipes import PRESETS, Recipe

from helpers import REPO, snakemake

DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def test_grid_imports_no_torch():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, advlayers.grid.plan, advlayers.grid.validate, "
                          "advlayers.grid.rebuild, advlayers.core.recipes, advlayers.tools.cost, advlayers; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_module_layers_match_the_models():
    for arch in vocab.ARCHS:  # the built-in archs (a config arch another test registered has no `width`)
        counts = vocab.MODULE_LAYERS[arch]
        found = [layer.module for layer in layers(build_model(arch, 10, 32, width=0.25))]
        assert tuple(found.count(m) for m in vocab.MODULE_NAMES) == counts, arch


def test_schema_enums_match_the_grid():
    schema = conf.schema()
    ds = schema["definitions"]["dataset"]["properties"]
    # archs and datasets are open names (a config's own archs, `kind: folder` datasets) that advlayers.grid.validate
    # checks; the schema's descriptions name the built-in ones
    assert ds["archs"]["items"] == {"$ref": "#/definitions/arch"}
    assert all(arch in schema["definitions"]["arch"]["description"] for arch in vocab.ARCHS)
    assert sorted(ds["recipe"]["enum"]) == sorted(PRESETS) == sorted(vocab.RECIPES)
    assert ", ".join(vocab.DATASETS) in schema["properties"]["datasets"]["description"]
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


def test_groups_are_stable_when_cells_are_added():
    config = {**DEMO, "grouping": {"jobs_per_net": 3}}
    before = plan.groups(config)
    more = {**config, "cutoffs": {"before": [1, 2, 3, 4, 6], "after": [1, 2, 3, 4]}}
    after = plan.groups(more)
    setting = vocab.Setting("mnist5k", "resnet18", 0, "adversarial")
    changed = [b for b in after[setting] if after[setting][b] != before[setting].get(b)]
    assert len(changed) == 1 and "m111100" in after[setting][changed[0]]
    assert plan.groups({**DEMO, "grouping": {}})[setting] == {c: [c] for c in plan.cells(DEMO)[setting]}


def test_cutoff_figure_needs_only_its_own_groups():
    """With grouping, `snakemake fig2` trains the cut-off figure's cells only; Fig. 5/6's other cells are in
    their own jobs, which the cut-off tables do not read."""
    setting = vocab.Setting("mnist5k", "resnet18", 0, "conventional")
    groups = plan.groups(DEMO)[setting]
    figure = plan.figure_cells(DEMO, setting)
    assert {c for g, cells in groups.items() if layout.group_kind(g) == "cutoff" for c in cells} == figure
    analysis_only = {c for g, cells in groups.items() if layout.group_kind(g) == "analysis" for c in cells}
    assert analysis_only and not analysis_only & figure and "l0-3" in analysis_only
    for table in ("cutoff", "cutoff_mnist5k"):
        assert not [p for p in plan.table_inputs(DEMO, table) if "analysis_nets" in p]
    assert [p for p in plan.table_inputs(DEMO, "layer_cutoff") if "analysis_nets" in p]
    assert "results/claims/cutoff_mnist5k.md" in plan.named_figure(DEMO, "fig2")


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8"])
def test_named_figure_targets_include_what_the_figures_are_drawn_from(name):
    """Issue 20 D: Snakemake does not rerun a job for a missing input whose output looks up to date, so each paper
    figure target names the per-dataset table or the embeddings its figures are drawn from: `snakemake fig2` after
    deleting results/tables/cutoff_cifar10.parquet rebuilds it instead of "Nothing to be done"."""
    config = copy.deepcopy(PAPER)
    validate.apply_schema(config)
    files = plan.named_figure(config, name)
    stems = {s for s in plan.figures(config) if set(layout.figure_paths(s)) & set(files)}
    assert stems
    drawn_from = {p for s in stems for p in plan.figure_inputs(config, s)}
    assert drawn_from and drawn_from <= set(files)
    if name == "fig2":
        assert "results/tables/cutoff_cifar10.parquet" in files
    if name == "fig8":
        assert any(p.endswith("_tsne.parquet") for p in files) and "results/tables/feature_divergence.parquet" in files


def test_grouped_evaluation_is_one_job_per_kind_of_group():
    """With grouping, a net's cells are evaluated in one job with the pretrained net (the cut-off figure's
    groups) and one more (the analysis groups): every net once, fig2 without analysis cells. Without grouping,
    one job per pretrained net and per cell."""
    for setting, groups in plan.groups(DEMO).items():
        units = plan.evaluation_units(DEMO, setting)
        assert sorted(c for cells in units.values() for c in cells) == sorted(
            ["pretrained", *(c for cells in groups.values() for c in cells)])
        assert set(units["cutoff_nets"]) == {"pretrained"} | {
            c for g, cells in groups.items() if layout.group_kind(g) == "cutoff" for c in cells}
        assert set(units.get("analysis_nets", [])) == {
            c for g, cells in groups.items() if layout.group_kind(g) == "analysis" for c in cells}
    s = vocab.Setting("mnist5k", "resnet18", 0, "adversarial")
    single = {**DEMO, "grouping": {}}
    assert plan.evaluation_units(single, s) == {"pretrained": ["pretrained"],
                                                **{f"retrained_{c}": [c] for c in plan.cells(DEMO)[s]}}
    with pytest.raises(vocab.ConfigError, match="cutoff_nets"):
        plan.evaluation_cells(DEMO, s, "pretrained")
    n_cells = sum(len(c) for c in plan.cells(DEMO).values())
    n_seeds = len(DEMO["seeds"])
    assert plan.job_counts(DEMO)["evaluate"] == 3 * n_seeds
    assert plan.job_counts(single)["evaluate"] == 2 * n_seeds + n_cells


def test_demo_runs_three_seeds_and_every_table_reads_each():
    """The default demo trains seeds 0, 1, 2 (docs/claims-v2.md); every net, every evaluation, reinit and
    features job exists per seed, and each table reads the parts of every seed (rows keyed by seed)."""
    assert DEMO["seeds"] == [0, 1, 2]
    config = validate.apply_schema(copy.deepcopy(DEMO))
    settings = plan.cells(config)
    assert sorted({s.seed for s in settings}) == [0, 1, 2]
    for seed in (0, 1, 2):
        mine = {s: c for s, c in settings.items() if s.seed == seed}
        assert sorted(c for cells in mine.values() for c in cells) == sorted(
            c for s, cells in settings.items() if s.seed == 0 for c in cells)
    for table in ("cutoff", "layer_cutoff", "module_subsets", "reinit", "feature_divergence", "outcomes"):
        seeds = {str(layout.parse(p)[1]["seed"]) for p in plan.table_inputs(config, table)}
        assert seeds == {"0", "1", "2"}, table
    counts = plan.job_counts(config)
    assert counts["pretrain"] == 6 and counts["reinit"] == 6 and counts["sample_features"] == 6
    assert tables.EVALUATION_KEY[:3] == ("dataset", "arch", "seed")
    assert "seed" in tables.STACKED_KEYS["reinit"] and "seed" in tables.STACKED_KEYS["feature_divergence"]


def test_layout_parses_every_path_it_builds():
    """Every artifact path the grid expands the configs to is parsed back to its kind and fields by the one
    layout module (what `verify` reads), and paths of one kind never parse as another."""
    for config in (DEMO, PAPER):
        for s in plan.settings(config):
            identity = {**s.identity()}
            built = {"pretrained": layout.pretrained_path(s), "initial": layout.initial_path(s),
                     "reinit": layout.reinit_path(s), "activations": layout.activations_path(s),
                     "divergence": layout.divergence_path(s), "embedding": layout.embedding_path(s, "umap")}
            for kind, path in built.items():
                assert layout.parse(path) == (kind, {**identity, **({"method": "umap"} if kind == "embedding" else {})})
            for unit in plan.evaluation_units(config, s):
                records, outcomes = layout.evaluation_paths(s, unit)
                assert layout.parse(records) == ("evaluation", {**identity, "unit": unit})
                assert layout.parse(outcomes) == ("outcomes", {**identity, "unit": unit})
                for cell, checkpoint in plan.evaluated_checkpoints(config, s, unit).items():
                    assert layout.unit_holds(unit, checkpoint)
        for s, groups in plan.groups(config).items():
            for group, cells in groups.items():
                for cell in cells:
                    kind, fields = layout.parse(layout.cell_path(s, group, cell))
                    assert kind == "cell" and fields["group"] == group and fields["cell"] == cell
                    assert fields["retraining"] == s.retraining
    assert layout.parse("results/checkpoints/digits/resnet18/seed0/conventional_then_conventional/m100000/m100000.pt") is None
    assert not layout.unit_holds("analysis_nets", "results/checkpoints/d/a/seed0/conventional/pretrained.pt")


def test_table_coordinates_name_every_cell():
    rows = plan.table_coordinates(PAPER, "cutoff")
    cifar = [r for r in rows if r["dataset"] == "cifar10" and r["arch"] == "resnet18" and r["pretraining"] == "conventional"]
    assert {(r["direction"], r["cutoff"]) for r in cifar} >= {("before", 6), ("after", 0), ("none", None)}
    cell = {(r["direction"], r["cutoff"]): r["cell"] for r in cifar}
    assert cell[("before", 6)] == cell[("after", 0)] == "m111111" and cell[("none", None)] == "pretrained"
    subsets = plan.table_coordinates(PAPER, "module_subsets")
    assert len(subsets) == 2 * 64 and {r["cell"] for r in subsets if r["subset"] == "000000"} == {"pretrained"}


def _job_stats(root, *config_args) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Jobs per rule of a dry run, and {(rule, job name): runtime} of its GPU jobs (from the log paths)."""
    _, out = snakemake(root, "-n", "all_figures", *config_args)
    table = out[out.index("Job stats:"):].split("\n\n")[0]
    stats = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    runtimes = {}
    for block in out.split("rule ")[1:]:
        log = re.search(r"^\s*log: logs/(\w+)/(\S+)\.log$", block, re.M)
        runtime = re.search(r"^\s*resources: .*\bruntime=(\d+)", block, re.M)
        if log and runtime and log.group(1) in cost.RULES:
            runtimes[(log.group(1), log.group(2))] = int(runtime.group(1))
    return stats, runtimes


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_cost_model_and_workflow_agree_on_every_job(repo_copy, configfile):
    """The same jobs, and each GPU job asks for the runtime `advlayers.tools.sizing` gives it (the cost model's
    estimate x safety factor on the paper config; cluster.cpu_runtime on the CPU demo)."""
    stats, runtimes = _job_stats(repo_copy, "--configfile", configfile)
    config = yaml.safe_load((REPO / configfile).read_text())
    assert cost.job_counts(config) == {rule: stats.get(rule, 0) for rule in cost.RULES}
    assert plan.job_counts(config)["retrain"] == sum(len(b) for b in plan.groups(config).values())
    sized = sizing.size(cost.load_config(REPO / configfile))
    assert runtimes == {key: s.runtime for key, s in sized.items()}


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
        validate.check(config)


def test_schema_holds_every_default():
    """The accessors read their defaults from the schema: a config that leaves keys out gets the schema's."""
    config = validate.apply_schema(yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text()))
    assert config["grouping"] == {"jobs_per_net": None, "analysis_apart": True}
    assert conf.eval_settings(config, "digits")["attack"] == conf.default("datasets", "*", "eval", "attack") == "pgd"
    bare = {"datasets": {"digits": {"archs": ["resnet18"], "recipe": "cifar10", "eval": {"eps": 0.1}}}}
    assert conf.eval_settings(bare, "digits")["batch_size"] == 256 and conf.seeds(bare) == [0]
    with pytest.raises(vocab.ConfigError, match="config error: datasets.digits.eval.eps"):
        validate.apply_schema({"datasets": {"digits": {"archs": ["resnet18"], "recipe": "cifar10",
                                                       "eval": {"eps": 3}}}, "cutoffs": {"before": [1], "after": [1]}})


def test_missing_dataset_root_is_named(tmp_path):
    with pytest.raises(vocab.ConfigError, match=r"datasets.cifar10.root = .* does not exist"):
        validate.check_root("cifar10", str(tmp_path / "nowhere"))
    (tmp_path / "cifar").mkdir()
    with pytest.raises(vocab.ConfigError, match="lacks data_batch_1"):
        validate.check_root("cifar10", str(tmp_path / "cifar"))
    with pytest.raises(vocab.ConfigError, match="is not set"):
        validate.check_root("imagenet", None)


@pytest.mark.parametrize("key,text", [("datasets.digits.eval.eps", ".nan"), ("datasets.digits.eval.step_size", ".inf"),
                                      ("datasets.digits.recipe_overrides.lr", ".inf"),
                                      ("datasets.digits.width", "-.inf")])
def test_non_finite_numbers_are_refused(tmp_path, key, text):
    """Issue 20 F: NaN passes every minimum/maximum of a JSON schema; the config is refused with one line naming
    the key, whether read by `validate.load` or by the workflow (`apply_schema`)."""
    config = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
    *parents, last = key.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = yaml.safe_load(text)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(vocab.ConfigError, match=rf"^config error: {key} = .* is not a finite number") as e:
        validate.load(path, roots=False)
    assert "\n" not in str(e.value)


def test_eps_ablation_is_the_demo_at_another_eps():
    """config/ablation_eps.yaml: a valid config equal to the demo except the attack radius (training and
    evaluation, steps scaled with it), so that a user's run of it and of the demo differ only in eps."""
    ablation = yaml.safe_load((REPO / "config" / "ablation_eps.yaml").read_text())
    validate.check(validate.apply_schema(copy.deepcopy(ablation)))
    demo = copy.deepcopy(DEMO)
    mine, theirs = ablation["datasets"]["mnist5k"], demo["datasets"]["mnist5k"]
    assert mine["recipe_overrides"].pop("eps") == 0.1 and mine["recipe_overrides"].pop("step_size") == 0.125
    assert mine["eval"]["eps"] == 0.1 and mine["eval"]["step_size"] == 0.1 / 4
    assert theirs["eval"]["eps"] == 0.15
    for d in (mine["eval"], theirs["eval"]):
        d.pop("eps"), d.pop("step_size")
    assert ablation == demo


def test_analysis_eval_overrides_only_what_it_names():
    """An analysis's `eval` (reinit, features) is an override of its dataset's: keys it leaves out come from the
    dataset's eval, not from schema defaults (a reinit `eval: {n: 100}` once evaluated with PGD while the
    dataset's attack was apgd)."""
    config = validate.load(REPO / "config" / "config.yaml", roots=False)
    ds = conf.eval_settings(config, "mnist5k")
    config["datasets"]["mnist5k"]["eval"].update(seed=3, restarts=2)
    for name in ("reinit", "features"):
        got = conf.eval_settings(config, "mnist5k", name)
        named = config["analyses"][name].get("eval") or {}
        assert set(named) <= {"n"}, named  # the demo's analyses override n only
        assert {k: v for k, v in got.items() if k != "n"} == {**{k: v for k, v in ds.items() if k != "n"},
                                                              "seed": 3, "restarts": 2}
        assert got["attack"] == ds["attack"] == "apgd"


def test_eval_each_epoch_is_off_by_default_and_reads_the_dataset_eval():
    """Off in the schema (the demo's training jobs keep their params: nothing reruns); on, PGD with the dataset's
    eval eps / step_size / steps on n tuning images, inside the training jobs' recipe param; a bad n or a
    missing step size is a config error naming the key."""
    config = validate.load(REPO / "config" / "config.yaml", roots=False)
    assert conf.default("datasets", "*", "eval_each_epoch") is None
    assert conf.epoch_eval_settings(config, "mnist5k") is None
    assert set(conf.recipe_params(config, "mnist5k")) == set(conf.recipe_params(config, "mnist5k", True)) == \
        {"name", "overrides"}
    config["datasets"]["mnist5k"]["eval_each_epoch"] = {}
    validate.check(config)
    got = conf.epoch_eval_settings(config, "mnist5k")
    assert got == {"attack": "pgd", "images": "tuning", "n": 256, "eps": 0.15, "step_size": 0.0375, "steps": 10,
                   "restarts": 1, "seed": 0, "batch_size": 256}
    assert conf.recipe_params(config, "mnist5k")["epoch_eval"] == conf.recipe_params(config, "mnist5k", True)[
        "epoch_eval"] == got
    config["datasets"]["mnist5k"]["eval_each_epoch"] = {"n": 501, "steps": 3}
    assert conf.epoch_eval_settings(config, "mnist5k")["steps"] == 3
    with pytest.raises(vocab.ConfigError, match=r"eval_each_epoch .*: n = 501 test images, but the tuning part .* 500"):
        validate.check(config)
    config["datasets"]["mnist5k"]["eval_each_epoch"] = {"n": 64}
    del config["datasets"]["mnist5k"]["eval"]["step_size"]
    config["datasets"]["mnist5k"]["eval"]["attack"] = "autoattack"
    with pytest.raises(vocab.ConfigError, match="eval_each_epoch .* needs datasets.mnist5k.eval.step_size"):
        validate.check(config)
    with pytest.raises(vocab.ConfigError, match="eval_each_epoch"):
        validate.apply_schema({"datasets": {"digits": {"archs": ["resnet18"], "recipe": "cifar10", "eval": {"eps": 0.1},
                                                       "eval_each_epoch": {"n": 0}}},
                               "cutoffs": {"before": [1], "after": [1]}})
