"""An arch's own module count N (issue 21: "The claims and figures use the arch's own module count"): a four-module
custom CNN (`tests/fournets.py`, given as `fournets:build` in a config) through the vocabulary, the config checks,
the plan and file names, cell units and redraw, the claims' control cell and the figures; six-module archs are
unchanged (tests/test_grid.py, tests/test_analyses.py, tests/claims_v1_golden.json)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import fournets
from advlayers.core import models, splitting, training
from advlayers.grid import layout, plan, validate
from advlayers.grid import vocabulary as vocab
from advlayers.grid.vocabulary import ConfigError, Setting

HERE = Path(__file__).parent
FOUR_YAML = """seeds: [0]
device: cpu
archs:
  four: {source: "fournets:build", module_layers: [1, 2, 2, 1]}
datasets:
  digits:
    archs: [four]
    recipe: mnist5k-demo
    recipe_overrides: {epochs: 1, train_subset: 128, batch_size: 64, precision: fp32}
    eval: {n: 32, eps: 0.1, step_size: 0.04, steps: 2, restarts: 1, batch_size: 64}
cutoffs:
  before: [1, 4]
  after: [2]
analyses:
  module_subsets: {dataset: digits, arch: four, subsets: ["1010", "0110"]}
figures:
  fig2: digits
resources:
  threads: 1
"""


def write_config(folder: Path, text: str = FOUR_YAML) -> Path:
    shutil.copy2(HERE / "fournets.py", folder / "fournets.py")
    (folder / "four.yaml").write_text(text)
    return folder / "four.yaml"


@pytest.fixture
def four(tmp_path):
    """The config arch 'four' registered (grid and core), and its built net."""
    config = validate.load(write_config(tmp_path), roots=False)
    splitting.register_config_archs(config, str(tmp_path))
    return config


def test_the_split_decides_the_module_count(four):
    model = models.build_model("four", 3, 32, seed=0)
    assert len(model) == 4 and model.module_names == ("m0", "m1", "m2", "m3")
    assert [sum(layer.module == m for layer in models.layers(model)) for m in model.module_names] == fournets.MODULE_LAYERS
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    out, h = model(x), x
    for module in models.split_modules(model):  # the four modules chain
        h = module(h)
    assert torch.equal(out, h) and out.shape == (2, 3)
    assert models.module_names_for_cutoff(1, "after", 4) == ["m1", "m2", "m3"]
    with pytest.raises(ValueError, match=r"0\.\.4"):
        models.module_names_for_cutoff(5, "before", 4)
    # explicit cuts: N = len(cuts) + 1 (here one cut: two modules, the minimum)
    nodes = [n.name for n in splitting.describe_nodes(fournets.build(3), 32) if n.op not in ("placeholder", "output")]
    modules, _ = splitting.split_net(fournets.build(3), nn.Identity(), 32, cuts=(nodes[3],))
    assert len(modules) == 2


def test_layers_command_prints_the_module_count(monkeypatch, capsys):
    from advlayers.tools import cli

    monkeypatch.chdir(HERE)  # `advlayers layers package.module:function` imports from the working directory
    assert cli.main(["layers", "fournets:build", "--image-size", "32"]) == 0
    assert "4 modules, layers per module m0..m3: module_layers: [1, 2, 2, 1]" in capsys.readouterr().out


def test_vocabulary_of_a_four_module_arch(four):
    assert vocab.num_modules("four") == 4 and vocab.num_modules("resnet18") == 6
    assert vocab.all_modules_cell("four") == "m1111" and vocab.all_modules_cell("vgg11_bn") == "m111111"
    assert len(vocab.all_subsets(4)) == 16 and vocab.all_subsets(4)[0] == "0000"
    assert vocab.cutoff_mask(4, "before", 4) == "1111" == vocab.cutoff_mask(0, "after", 4)
    assert vocab.cell_of_layers("four", range(6)) == "m1111"
    assert vocab.cell_of_layers("four", [1, 2]) == "m0100"
    assert vocab.cell_of_layers("four", [1]) == "l1-2"
    assert vocab.cell_layers("four", "m0110") == [1, 2, 3, 4]
    assert vocab.describe_cell("four", "m0110") == "m1-m2"
    assert vocab.as_mask("m0,m3", 4) == "1001" and vocab.as_mask(11, 4) == "0011"
    with pytest.raises(ConfigError, match="not a module cell of four: it has 4 modules"):
        vocab.cell_layers("four", "m111111")
    with pytest.raises(ConfigError, match=r"0\.\.4"):
        vocab.cutoff_mask(5, "before", 4)
    with pytest.raises(ConfigError, match="4 characters"):
        vocab.mask_modules("101000", 4)
    with pytest.raises(ConfigError, match="2 or more layer counts"):
        vocab.register_module_layers("one", [3])


def test_config_checks_and_plan_use_the_arch_module_count(four, tmp_path):
    assert plan.cutoff_cells(four, "four") == {("before", 1): "m1000", ("before", 4): "m1111", ("after", 2): "m0011"}
    assert plan.module_subset_cells(four) == {"1010": "m1010", "0110": "m0110"}
    s = Setting("digits", "four", 0, "conventional")
    assert plan.cells(four)[s] == ["m0011", "m0110", "m1000", "m1010", "m1111"]
    rows = plan.table_coordinates(four, "module_subsets")  # the pretrained net is the empty subset '0000'
    assert {r["subset"]: r["cell"] for r in rows} == {"0000": "pretrained", "1010": "m1010", "0110": "m0110"}
    kind, fields = layout.parse(layout.cell_path(s, "m1010", "m1010"))  # file names carry the 4-bit cell ids
    assert fields["cell"] == "m1010"
    bad = [("before: [1, 4]", "before: [1, 6]", r"cutoffs\.before = 6 is not valid; valid choices: 0\.\.4 \(four of "
            r"datasets\.digits has 4 modules; or give four its own: archs\.four\.cutoffs\)"),
           ('subsets: ["1010", "0110"]', 'subsets: ["101000"]', r"analyses\.module_subsets\.subsets = '101000' is "
            r"not valid; valid choices: 4 characters of 0/1 \(four has 4 modules\)"),
           ("module_layers: [1, 2, 2, 1]}", "module_layers: [1, 2, 2, 1], cuts: [a, b]}", r"archs\.four\.cuts .*3 fx "
            "node names"),
           ("module_layers: [1, 2, 2, 1]", "module_layers: [6]", "minItems|too short|2 or more"),
           ("figures:", "  features: {dataset: digits, arch: four, n_images: 4, vectors_per_image: 1, methods: [tsne]}\n"
            "figures:", r"^config error: analyses\.features\.modules = 'm4' is not valid; valid choices: m0\.\.m3 \(four "
            r"has 4 modules; the default m1\.\.m4 is the paper's six-module choice\)$")]
    for old, new, message in bad:
        folder = tmp_path / f"bad{bad.index((old, new, message))}"
        folder.mkdir()
        assert old in FOUR_YAML
        with pytest.raises(ConfigError, match=message):
            validate.load(write_config(folder, FOUR_YAML.replace(old, new)), roots=False)
    good = FOUR_YAML.replace("figures:", "  features: {dataset: digits, arch: four, modules: [m1, m2], n_images: 4, "
                             "vectors_per_image: 1, methods: [tsne]}\nfigures:")
    folder = tmp_path / "features"
    folder.mkdir()
    assert validate.load(write_config(folder, good), roots=False)["analyses"]["features"]["modules"] == ["m1", "m2"]


def test_cell_units_and_redraw_of_a_four_module_net(four):
    model = models.build_model("four", 3, 32, seed=0)
    assert training.cell_units(model, "m0110") == ["m1", "m2"]
    layers = models.layers(model)
    assert training.cell_units(model, "l1-3") == [*layers[1].names, *layers[2].names]  # conv + BN of m1's 2 layers
    with pytest.raises(ConfigError, match="4 characters"):
        training.cell_units(model, "m011000")
    with pytest.raises(ValueError, match=r"valid: m0\.\.m3"):
        training.check_units(model, ["m5"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training.redraw(model, ["m1"], seed=1_000_000)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"m1"}


def test_claims_and_figures_use_the_arch_module_count(four):
    from advlayers.report.claim_checks_v2 import control_cell
    from advlayers.report.figures.cutoff import arch_modules, cutoff_figure
    from advlayers.report.figures.module_subsets import module_subsets_figure, module_summary

    assert control_cell("four") == "m1111" and control_cell("resnet18") == "m111111"
    assert control_cell("unregistered", ["m1000", "m0011", "l0-2"]) == "m1111"
    rows = [{"pretraining": p, "arch": "four", "subset": mask, "clean_acc": 0.5 + 0.01 * i, "robust_acc": 0.1 * (i % 3)}
            for p in ("conventional", "adversarial") for i, mask in enumerate(vocab.all_subsets(4))]
    summary = module_summary(pd.DataFrame(rows))
    assert sorted(summary["module"].unique()) == ["m0", "m1", "m2", "m3"]
    assert set(summary.loc[summary["membership"] == "included", "n"]) == {8}  # 8 of the 16 subsets hold a module
    fig = module_subsets_figure(pd.DataFrame(rows), {})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["m0", "m1", "m2", "m3"]
    assert "all 16 module subsets" in fig._suptitle.get_text()
    cut = pd.DataFrame([{"dataset": "digits", "arch": "four", "seed": 0, "pretraining": p, "direction": d,
                         "cutoff": c, "cell": vocab.cell_of_mask(vocab.cutoff_mask(c, d, 4)) or "pretrained",
                         "clean_acc": 0.8, "robust_acc": 0.2, "n": 32}
                        for p in ("conventional", "adversarial") for d in ("before", "after") for c in range(1, 5)])
    assert arch_modules(cut, "four") == 4
    fig = cutoff_figure(cut, {"dataset": "digits"})
    assert fig.axes[0].get_xlim() == (-0.3, 4.3) and "m(c)…m3" in fig.axes[1].get_title()


@pytest.mark.slow
def test_four_module_arch_runs_all_figures(tmp_path):
    """The workflow end to end at tiny size on the four-module arch: cut-offs 0..4, two module subsets, the
    controls on m1111, the figures with its own modules."""
    from helpers import copy_repo, snakemake

    root = copy_repo(tmp_path / "repo")
    write_config(root)
    snakemake(root, "all_figures", "--cores", "2", "--configfile", "four.yaml")
    cut = pd.read_parquet(root / "results" / "tables" / "cutoff_digits.parquet")
    assert {"m1000", "m1111", "m0011"} <= set(cut["cell"])
    subsets = pd.read_parquet(root / "results" / "tables" / "module_subsets.parquet")
    assert set(subsets["subset"].astype(str)) >= {"1010", "0110"}
    claims = pd.read_parquet(root / "results" / "tables" / "claims.parquet")
    control = claims[claims["claim"].isin(["A", "B"])]
    assert len(control) == 2 and control["cells"].astype(str).str.contains("m1111").all()
    assert (root / "results" / "figures" / "cutoff_digits.png").exists()
    assert list((root / "results" / "checkpoints").rglob("m1010*")) or list((root / "results").rglob("*m1010*"))


def _edited(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# FOUR_YAML with its own cut-offs for `four`, beside resnet18 and `six` (which only plans: its module_layers are not
# checked against a built net here), the global cut-offs of six-module archs and no analyses
MIXED_YAML = _edited(
    FOUR_YAML,
    ("module_layers: [1, 2, 2, 1]}", "module_layers: [1, 2, 2, 1], cutoffs: {before: [1, 2, 4], after: [1, 3]}}\n"
                                    '  six: {source: "fournets:build", module_layers: [1, 1, 1, 1, 1, 1]}'),
    ("archs: [four]", "archs: [four, resnet18, six]"),
    ("  before: [1, 4]\n  after: [2]\n", "  before: [2, 6]\n  after: [5]\n"),
    ('analyses:\n  module_subsets: {dataset: digits, arch: four, subsets: ["1010", "0110"]}\n', ""),
)
MIXED_CELLS = {"four": {("before", 1): "m1000", ("before", 2): "m1100", ("before", 4): "m1111",
                        ("after", 1): "m0111", ("after", 3): "m0001"},
               "resnet18": {("before", 2): "m110000", ("before", 6): "m111111", ("after", 5): "m000001"},
               "six": {("before", 2): "m110000", ("before", 6): "m111111", ("after", 5): "m000001"}}


def test_an_arch_sets_its_own_cutoffs(tmp_path):
    """A config mixing a four-module arch (its own cut-offs, `archs.four.cutoffs`) with six-module ones (the
    top-level list): each plans its own cells; a cut-off out of an arch's 0..N is a one-line error naming it."""
    config = validate.load(write_config(tmp_path, MIXED_YAML), roots=False)
    for arch, expected in MIXED_CELLS.items():
        assert plan.cutoff_cells(config, arch) == expected
    for arch in MIXED_CELLS:
        s = Setting("digits", arch, 0, "adversarial")
        assert set(plan.cells(config)[s]) == set(MIXED_CELLS[arch].values())
    rows = plan.table_coordinates(config, "cutoff")
    assert {(r["direction"], r["cutoff"]) for r in rows if r["arch"] == "four"} == {("none", None),
                                                                                  *MIXED_CELLS["four"]}
    # one direction of its own: the other stays the top-level list
    half = MIXED_YAML.replace("cutoffs: {before: [1, 2, 4], after: [1, 3]}", "cutoffs: {after: [1, 3]}")
    half = half.replace("before: [2, 6]", "before: [2, 4]")
    folder = tmp_path / "half"
    folder.mkdir()
    config = validate.load(write_config(folder, half), roots=False)
    assert plan.cutoff_cells(config, "four") == {("before", 2): "m1100", ("before", 4): "m1111",
                                                 ("after", 1): "m0111", ("after", 3): "m0001"}
    assert plan.cutoff_cells(config, "six")[("before", 4)] == "m111100"
    bad = [("before: [1, 2, 4]", "before: [1, 5]",
            r"^config error: archs\.four\.cutoffs\.before = 5 is not valid; valid choices: 0\.\.4 \(four has 4 "
            r"modules\)$"),
           ("cutoffs: {before: [1, 2, 4], after: [1, 3]}", "cutoffs: {}",
            r"^config error: cutoffs\.before = 6 is not valid; valid choices: 0\.\.4 \(four of datasets\.digits has "
            r"4 modules; or give four its own: archs\.four\.cutoffs\)$"),
           ("cutoffs: {before: [1, 2, 4], after: [1, 3]}", "cutoffs: {after: [1, 3]}", r"cutoffs\.before = 6 .*0\.\.4"),
           ("after: [1, 3]}", "after: []}", r"archs\.four\.cutoffs\.after.*(should be non-empty|too short)"),
           ("after: [1, 3]}", "after: [1, 3], during: [2]}", r"archs\.four\.cutoffs.*during")]
    for i, (old, new, message) in enumerate(bad):
        folder = tmp_path / f"bad{i}"
        folder.mkdir()
        assert old in MIXED_YAML
        with pytest.raises(ConfigError, match=message):
            validate.load(write_config(folder, MIXED_YAML.replace(old, new)), roots=False)
    # an arch no dataset lists: its own cut-offs are still checked
    folder = tmp_path / "unlisted"
    folder.mkdir()
    text = MIXED_YAML.replace("archs: [four, resnet18, six]", "archs: [resnet18]").replace("before: [1, 2, 4]",
                                                                                          "before: [7]")
    with pytest.raises(ConfigError, match=r"archs\.four\.cutoffs\.before = 7 .*0\.\.4 \(four has 4 modules\)"):
        validate.load(write_config(folder, text), roots=False)


def test_a_dry_run_plans_each_archs_own_cutoffs(tmp_path):
    """The workflow plans the retraining jobs of each arch's own cut-offs (`snakemake -n`, nothing runs)."""
    from helpers import copy_repo, dry_run

    root = copy_repo(tmp_path / "repo")
    write_config(root, MIXED_YAML.replace("archs: [four, resnet18, six]", "archs: [four, resnet18]"))
    jobs = dry_run(root, "fig2", "--configfile", "four.yaml")
    retrained = {}
    for p in jobs["retrain"]:
        kind, fields = layout.parse(p)
        if kind == "group":  # without grouping a group is its one cell
            retrained.setdefault(fields["arch"], set()).add(fields["group"])
    assert retrained == {arch: set(MIXED_CELLS[arch].values()) for arch in ("four", "resnet18")}


def _figure_info(config: dict, figure: str) -> dict:
    """workflow/rules/common.smk's `figure_info` (what the report's captions are rendered from) for `figure`, run
    on its own: its source up to its last line, with the names it uses from common.smk."""
    from types import SimpleNamespace

    from advlayers.grid import conf

    text = (HERE.parent / "workflow" / "rules" / "common.smk").read_text()
    source = text[text.index("def figure_info(wc):"):]
    source = source[:source.index("\n    return info\n") + len("\n    return info\n")]
    names = {"config": config, "conf": conf, "layout": layout, "SEEDS": conf.seeds(config),
             "MODULE_LAYERS": vocab.MODULE_LAYERS}
    exec(source, names)
    return names["figure_info"](SimpleNamespace(figure=figure))


def test_subsets_caption_of_all_subsets_counts_the_arch_own_modules(tmp_path):
    """Fig. 6's caption with `subsets` at its default (null: all 2^N subsets) counts the four-module arch's own
    modules: 'all 16 subsets of m0..m3', not the paper's 64 of m0..m5."""
    from types import SimpleNamespace

    jinja2 = pytest.importorskip("jinja2")
    config = validate.load(write_config(tmp_path, FOUR_YAML.replace(', subsets: ["1010", "0110"]', "")), roots=False)
    assert config["analyses"]["module_subsets"].get("subsets") is None
    info = _figure_info(config, "module_subsets")
    template = (HERE.parent / "workflow" / "report" / "figure.rst").read_text()
    snakemake = SimpleNamespace(params=SimpleNamespace(info=info), wildcards=SimpleNamespace(figure="module_subsets"),
                                output=["results/figures/module_subsets.png"])
    text = " ".join(jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template)
                    .render(snakemake=snakemake).split())
    assert "all 16 subsets of m0..m3" in text and "64" not in text and "m5" not in text, text
