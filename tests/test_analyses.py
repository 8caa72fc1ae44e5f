import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from advlayers.analyses import (
    combination_summary,
    layer_cutoff_units,
    layer_table,
    module_subsets,
    reinit_grid,
    reinit_layer,
    subset_from_id,
    subset_id,
)
from advlayers.models import build_model, layers, parameter_count
from advlayers.training import check_units

PRETRAIN_SEED = 0


@pytest.fixture(scope="module")
def initial_state():
    return build_model("resnet18", 10, 32, seed=PRETRAIN_SEED).state_dict()


@pytest.fixture(scope="module")
def trained(initial_state):
    """Stands in for a pretrained net: every parameter and buffer moved away from its initial value."""
    model = build_model("resnet18", 10, 32, seed=PRETRAIN_SEED)
    model.load_state_dict(initial_state)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=g)).abs_()  # abs keeps running_var > 0
            else:
                tensor.add_(7)  # num_batches_tracked
    return model.eval()


def _same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


# --------------------------------------------------------------------------- per-layer cut-off


def test_layer_cutoff_units_are_the_first_k_layers(trained):
    expected = ["m0.1", "m0.2", "m1.1.0.conv1", "m1.1.0.bn1", "m1.1.0.conv2", "m1.1.0.bn2"]
    assert layer_cutoff_units(trained, 3) == expected
    n = len(layers(trained))
    assert n == 21  # resnet18: stem conv, 16 block convs, 3 downsample convs, fc
    after = layer_cutoff_units(trained, 3, "after")
    assert after[:2] == ["m1.1.1.conv1", "m1.1.1.bn1"] and after[-1] == "m5.2"
    assert layer_cutoff_units(trained, 0) == [] and layer_cutoff_units(trained, n, "after") == []
    all_names = layer_cutoff_units(trained, n)
    assert all_names == layer_cutoff_units(trained, 0, "after") == [x for layer in layers(trained) for x in layer.names]
    for k in range(n + 1):
        assert layer_cutoff_units(trained, k) + layer_cutoff_units(trained, k, "after") == all_names
    assert check_units(trained, all_names) == all_names  # retrain() accepts them
    for bad in (-1, n + 1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="cut-off"):
            layer_cutoff_units(trained, bad)
    with pytest.raises(ValueError, match="direction"):
        layer_cutoff_units(trained, 1, "middle")


def test_layer_table_marks_modules_and_counts_parameters(trained):
    table = layer_table(trained)
    assert [row["index"] for row in table] == list(range(21))
    assert [row["module"] for row in table] == ["m0"] + ["m1"] * 4 + ["m2"] * 5 + ["m3"] * 5 + ["m4"] * 5 + ["m5"]
    assert table[7]["conv"] == "m2.0.downsample.0" and table[7]["bn"] == "m2.0.downsample.1"
    assert table[-1]["bn"] is None
    assert table[0]["n_params"] == 64 * 3 * 7 * 7 + 2 * 64
    assert sum(row["n_params"] for row in table) == parameter_count(trained)


# --------------------------------------------------------------------------- module combinations


def test_module_subsets_are_all_64_distinct():
    subsets = module_subsets()
    assert len(subsets) == 64 and len(set(subsets)) == 64
    assert {subset_id(s) for s in subsets} == {"".join(bits) for bits in itertools.product("01", repeat=6)}
    assert subsets[0] == () and subsets[-1] == ("m0", "m1", "m2", "m3", "m4", "m5")
    assert module_subsets() == subsets  # stable order
    assert subset_id(("m0", "m2")) == "101000"
    for s in subsets:
        assert subset_from_id(subset_id(s)) == s
    for bad in ("10100", "10100x", 101000):
        with pytest.raises(ValueError):
            subset_from_id(bad)
    with pytest.raises(ValueError):
        subset_id(("m6",))


def test_combination_summary_medians():
    rng = np.random.default_rng(0)
    rows = []
    for pretrain in ("conventional", "adversarial"):
        for s in module_subsets():
            rows.append({"pretrain": pretrain, "retrained_modules": ",".join(s) or "none",
                         "clean_acc": rng.uniform(0.8, 0.9), "robust_acc": (0.5 if "m0" in s else 0.1) + rng.uniform(0, 0.01)})
    df = pd.DataFrame(rows)
    summary = combination_summary(df, by=["pretrain"])
    assert len(summary) == 2 * 6 * 2 * 2
    assert set(summary["n"]) == {32}
    for _, row in summary.iterrows():
        group = df[df["pretrain"] == row["pretrain"]]
        has = group["retrained_modules"].str.contains(row["module"])
        values = group.loc[has if row["membership"] == "included" else ~has, row["metric"]].to_numpy()
        assert row["median"] == pytest.approx(np.median(values))
        assert row["q25"] == pytest.approx(np.percentile(values, 25))
        assert row["q75"] == pytest.approx(np.percentile(values, 75))
    m0 = summary[(summary.module == "m0") & (summary.metric == "robust_acc") & (summary.pretrain == "adversarial")]
    assert m0.set_index("membership")["median"]["included"] > 0.5 > m0.set_index("membership")["median"]["excluded"]
    # the bitmask column gives the same answer
    by_mask = df.assign(subset=[subset_id(s) for s in module_subsets()] * 2).drop(columns="retrained_modules")
    pd.testing.assert_frame_equal(combination_summary(by_mask, by=["pretrain"]), summary)
    with pytest.raises(ValueError, match="subset"):
        combination_summary(df.drop(columns="retrained_modules"))


# --------------------------------------------------------------------------- layer re-initialisation


def test_reinit_changes_exactly_one_layer_back_to_its_initial_values(trained, initial_state):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    layer = layers(trained)[5]  # m2.0.conv1 + m2.0.bn1
    new = reinit_layer(trained, layer.index, initial_state=initial_state, how="reinit")
    state = new.state_dict()
    layer_keys = {k for k in state if k.rsplit(".", 1)[0] in layer.names}
    assert layer_keys == {"m2.0.conv1.weight", "m2.0.bn1.weight", "m2.0.bn1.bias", "m2.0.bn1.running_mean",
                          "m2.0.bn1.running_var", "m2.0.bn1.num_batches_tracked"}
    assert _same(state, initial_state, layer_keys)
    assert _same(state, before, set(state) - layer_keys)
    assert not any(torch.equal(state[k], before[k]) for k in layer_keys)
    assert _same(trained.state_dict(), before, before)  # the input model is untouched
    assert not new.training
    # same layer by name
    by_name = reinit_layer(trained, "m2.0.conv1", initial_state=initial_state, how="reinit")
    assert _same(by_name.state_dict(), state, state)


def test_reinit_keep_stats_keeps_trained_running_statistics(trained, initial_state):
    new = reinit_layer(trained, 0, initial_state=initial_state, how="reinit", bn_policy="keep_stats").state_dict()
    old = trained.state_dict()
    assert _same(new, initial_state, ["m0.1.weight", "m0.2.weight", "m0.2.bias"])
    assert _same(new, old, ["m0.2.running_mean", "m0.2.running_var", "m0.2.num_batches_tracked"])
    assert _same(new, old, [k for k in new if not k.startswith(("m0.1.", "m0.2."))])


def test_rerandomize_draws_fresh_values(trained, initial_state):
    fc = layers(trained)[-1]
    new = reinit_layer(trained, fc, initial_state=initial_state, how="rerandomize", seed=PRETRAIN_SEED + 1).state_dict()
    old = trained.state_dict()
    for key in ("m5.2.weight", "m5.2.bias"):
        assert not torch.equal(new[key], old[key]) and not torch.equal(new[key], initial_state[key])
    assert new["m5.2.weight"].std() == pytest.approx(initial_state["m5.2.weight"].std(), rel=0.1)  # same law
    assert _same(new, old, [k for k in new if not k.startswith("m5.2.")])
    conv = reinit_layer(trained, 1, how="rerandomize", seed=5).state_dict()
    assert not torch.equal(conv["m1.1.0.conv1.weight"], initial_state["m1.1.0.conv1.weight"])
    assert torch.equal(conv["m1.1.0.bn1.running_var"], initial_state["m1.1.0.bn1.running_var"])  # reset: ones
    with pytest.raises(ValueError, match="pretraining seed"):
        reinit_layer(trained, 1, initial_state=initial_state, how="rerandomize", seed=PRETRAIN_SEED)
    with pytest.raises(ValueError, match="initial_state"):
        reinit_layer(trained, 1, how="reinit")
    with pytest.raises(ValueError, match="unknown layer"):
        reinit_layer(trained, 21, initial_state=initial_state)
    with pytest.raises(ValueError, match="bn_policy"):
        reinit_layer(trained, 1, initial_state=initial_state, bn_policy="zero")


def test_reinit_grid_covers_every_layer_and_both_hows(trained, initial_state):
    grid = reinit_grid(trained, initial_state, seed=PRETRAIN_SEED + 1)
    first = next(grid)
    assert first[:3] == (-1, "none", "none") and first[3] is trained
    seen = []
    old = trained.state_dict()
    for index, name, how, model in grid:
        seen.append((index, name, how))
        if index == 12:  # m3.0.downsample: only that conv + BN differ from the trained net
            state = model.state_dict()
            changed = {k for k in state if not torch.equal(state[k], old[k])}
            assert {k.rsplit(".", 1)[0] for k in changed} == {"m3.0.downsample.0", "m3.0.downsample.1"}
    names = [layer.name for layer in layers(trained)]
    assert seen == [(i, n, how) for i, n in enumerate(names) for how in ("reinit", "rerandomize")]


# --------------------------------------------------------------------------- figures


def test_analysis_plots_write_png_and_pdf(tmp_path, trained):
    from advlayers.analysis_plots import plot_combinations, plot_layer_cutoff, plot_reinit

    table = layer_table(trained)
    n = len(table)
    rng = np.random.default_rng(0)
    cutoff = pd.DataFrame([
        {"setting": setting, "direction": direction, "cutoff": k, "clean_acc": 0.9 - 0.01 * rng.random(),
         "robust_acc": min(0.45, 0.06 * k) if direction == "before" else 0.45 - min(0.4, 0.06 * k)}
        for setting in ("conventional -> adversarial", "adversarial -> conventional")
        for direction in ("before", "after") for k in range(n + 1)
    ])
    reference = pd.DataFrame([{"label": "pretrained conventional", "clean_acc": 0.93, "robust_acc": 0.0},
                              {"label": "pretrained adversarial", "clean_acc": 0.8, "robust_acc": 0.45}])
    plot_layer_cutoff(cutoff, tmp_path / "cut.png", tmp_path / "cut.pdf", layer_info=table, reference=reference)

    rows = [{"pretrain": p, "subset": subset_id(s), "clean_acc": rng.uniform(0.8, 0.9),
             "robust_acc": (0.4 if "m0" in s else 0.05) + rng.uniform(0, 0.1)}
            for p in ("conventional", "adversarial") for s in module_subsets()]
    plot_combinations(combination_summary(pd.DataFrame(rows), by=["pretrain"]), tmp_path / "comb.png", tmp_path / "comb.pdf")

    names = [layer.name for layer in layers(trained)]
    reinit = pd.DataFrame(
        [{"pretrain": p, "dataset": "cifar10", "layer_index": -1, "layer_name": "none", "how": "none",
          "clean_acc": 0.9, "robust_acc": 0.3} for p in ("conventional", "adversarial")]
        + [{"pretrain": p, "dataset": "cifar10", "layer_index": i, "layer_name": name, "how": how,
            "clean_acc": rng.uniform(0.1, 0.9), "robust_acc": rng.uniform(0, 0.4)}
           for p in ("conventional", "adversarial") for i, name in enumerate(names) for how in ("reinit", "rerandomize")])
    plot_reinit(reinit, tmp_path / "reinit.png", tmp_path / "reinit.pdf")
    for name in ("cut", "comb", "reinit"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000
