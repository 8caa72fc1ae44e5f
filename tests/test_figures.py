"""Every figure from small synthetic tables (the schemas of README "Tables"): drawn, saved as PNG + PDF, and
checked for what a paper needs (size, fonts, TrueType, visible zero lines, legends clear of the axes,
titles from the config, torchvision layer names, uncertainty drawn)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from advlayers.grid import vocabulary as vocab
from advlayers.report.figures import FIGURES, save_figure
from advlayers.report.figures.module_subsets import module_summary
from advlayers.report.figures.style import COLUMN_WIDTH, FULL_WIDTH
from advlayers.stats import wilson

matplotlib.use("Agg")

N_EVAL = 200
ATTACK = {"attack": "pgd", "eps": 0.1, "step_size": 0.025, "steps": 10, "restarts": 1, "n": N_EVAL, "seed": 0,
          "batch_size": 256}
MODULE_LAYERS = [1, 4, 5, 5, 5, 1]  # resnet18
RESNET18_LAYERS = (["conv1"] + [f"layer{i}.{b}.conv{c}" for i in (1,) for b in (0, 1) for c in (1, 2)]
                   + [n for i in (2, 3, 4) for n in (f"layer{i}.0.conv1", f"layer{i}.0.conv2",
                                                     f"layer{i}.0.downsample.0", f"layer{i}.1.conv1",
                                                     f"layer{i}.1.conv2")] + ["fc"])


def _acc(rng, value, n=N_EVAL):
    """An accuracy of n images near `value` with its Wilson interval (0 and 1 stay exact)."""
    k = int(round(np.clip(value + (rng.normal(0, 0.02) if 0 < value < 1 else 0), 0, 1) * n))
    lo, hi = wilson(k, n)
    return k / n, lo, hi


def _eval(rng, clean, robust):
    c, clo, chi = _acc(rng, clean)
    r, rlo, rhi = _acc(rng, robust)
    return {"attack": "PGD-10", "eps": 0.1, "step_size": 0.025, "steps": 10, "restarts": 1, "n_eval": N_EVAL,
            "eval_seed": 0, "clean_acc": c, "clean_acc_lo": clo, "clean_acc_hi": chi, "robust_acc": r,
            "robust_acc_lo": rlo, "robust_acc_hi": rhi, "epochs": 3, "git_commit": "abc"}


def _base(dataset, arch, seed, pretraining, retraining, cell):
    return {"dataset": dataset, "arch": arch, "width": 1.0, "seed": seed, "pretraining": pretraining,
            "retraining": retraining, "cell": cell, "retrained_modules": []}


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Text columns as pandas' "string" dtype, as advlayers.tables writes them."""
    text = [c for c in table if table[c].map(lambda v: isinstance(v, str)).all()]
    return table.astype({c: "string" for c in text})


def cutoff_table(seeds=(0, 1), archs=("resnet18", "vgg11_bn")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for arch in archs:
        for seed in seeds:
            for p in ("conventional", "adversarial"):
                adv = p == "adversarial"
                pre = (0.93, 0.55) if adv else (0.99, 0.0)  # the conventional net: robust accuracy exactly 0
                rows.append({**_base("mnist5k", arch, seed, p, "none", "pretrained"), "direction": "none",
                             "cutoff": pd.NA, **_eval(rng, *pre)})
                for d in ("before", "after"):
                    for c in range(7):
                        pretrained = (d == "before" and c == 0) or (d == "after" and c == 6)
                        early = c if d == "before" else 0  # early modules retrained in the opposite mode
                        if pretrained:
                            clean, robust = pre
                        elif not adv:
                            robust = 0.0 if early == 0 else min(0.6, 0.2 * early)
                            clean = 0.97
                        else:
                            robust = 0.55 if early == 0 else max(0.05, 0.5 - 0.2 * early)
                            clean = 0.97
                        rows.append({**_base("mnist5k", arch, seed, p, "none" if pretrained else
                                             ("conventional" if adv else "adversarial"),
                                             "pretrained" if pretrained else f"m{c}"),
                                     "direction": d, "cutoff": c, **_eval(rng, clean, robust)})
    return _typed(pd.DataFrame(rows).astype({"cutoff": "Int64"}))


def layer_cutoff_table(seeds=(0,)) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for seed in seeds:
        for p in ("conventional", "adversarial"):
            for k in (0, 1, 3, 5, 8, 13, 21):
                if p == "conventional":
                    clean, robust = (0.99, 0.0) if k == 0 else (0.97, min(0.6, 0.1 + 0.06 * k))
                else:
                    clean, robust = (0.93, 0.55) if k == 0 else (0.97, max(0.02, 0.5 - 0.08 * k))
                rows.append({**_base("mnist5k", "resnet18", seed, p, "none" if k == 0 else
                                     ("adversarial" if p == "conventional" else "conventional"),
                                     "pretrained" if k == 0 else f"l0-{k}"),
                             "direction": "before", "layer_cutoff": k, **_eval(rng, clean, robust)})
    return _typed(pd.DataFrame(rows).astype({"layer_cutoff": "Int64"}))


def module_subsets_table(n_subsets=20, seeds=(0, 1)) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    others = sorted({format(i, "06b") for i in range(1, 64)})
    masks = ["000000"] + [others[i] for i in sorted(rng.permutation(63)[:n_subsets - 1])]
    rows = []
    for seed in seeds:
        for p in ("conventional", "adversarial"):
            for mask in masks:
                early = mask[0] == "1" or mask[1] == "1"
                if p == "conventional":
                    robust = 0.5 if early else 0.05
                else:
                    robust = 0.1 if early else 0.5
                if mask == "000000":
                    robust = 0.0 if p == "conventional" else 0.55
                rows.append({**_base("mnist5k", "resnet18", seed, p, "adversarial", "m" + mask), "subset": mask,
                             **_eval(rng, 0.97, robust)})
    return _typed(pd.DataFrame(rows))


def reinit_table(seeds=(0,)) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    modules = [f"m{m}" for m, n in enumerate(MODULE_LAYERS) for _ in range(n)]
    rows = []
    for seed in seeds:
        for p in ("conventional", "adversarial"):
            for bn in ("reset", "keep_stats"):
                base = (0.99, 0.0) if p == "conventional" else (0.93, 0.55)
                rows.append({**_base("mnist5k", "resnet18", seed, p, "none", "pretrained"), "layer_index": -1,
                             "layer": "none", "module": "none", "operation": "none", "bn_policy": bn,
                             **_eval(rng, *base)})
                for i, (name, module) in enumerate(zip(RESNET18_LAYERS, modules)):
                    for op in ("rewind", "redraw"):
                        drop = 0.8 if i < 3 else 0.1
                        clean = max(0.1, base[0] - drop * (1.2 if op == "redraw" else 1))
                        robust = min(0.9, base[1] + (0.2 if i < 3 and p == "conventional" else 0.0))
                        rows.append({**_base("mnist5k", "resnet18", seed, p, "none", "pretrained"),
                                     "layer_index": i, "layer": name, "module": module, "operation": op,
                                     "bn_policy": bn, **_eval(rng, clean, robust)})
    return _typed(pd.DataFrame(rows).drop(columns=["retraining", "cell", "retrained_modules"]))


def embedding_tables(n=300, modules=("m1", "m2", "m3", "m4")) -> list[pd.DataFrame]:
    rng = np.random.default_rng(4)
    parts = []
    for p in ("conventional", "adversarial"):
        rows = []
        for j, module in enumerate(modules):
            shift = (1 + j) * (2.0 if p == "conventional" else 0.3)
            for condition in ("clean", "adversarial"):
                offset = shift if condition == "adversarial" else 0.0
                xy = rng.normal(size=(n, 2)) + [offset, 0]
                rows.append(pd.DataFrame({"dataset": "mnist5k", "arch": "resnet18", "seed": 0, "pretraining": p,
                                          "module": module, "method": "tsne", "x": xy[:, 0], "y": xy[:, 1],
                                          "condition": condition, "row": np.arange(n), "image": np.arange(n) // 10}))
        parts.append(_typed(pd.concat(rows, ignore_index=True)))
    return parts


def divergence_table(seeds=(0, 1)) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for seed in seeds:
        for p in ("conventional", "adversarial"):
            for j, module in enumerate(("m1", "m2", "m3", "m4")):
                auc = (0.7 + 0.07 * j) if p == "conventional" else 0.52 + 0.01 * j
                mmd = (0.05 + 0.1 * j) if p == "conventional" else 0.001 * j - 0.0005
                pv = 0.001 if p == "conventional" else 0.4
                boot = np.clip(auc + rng.normal(0, 0.03, 50), 0, 1)
                rows.append({"dataset": "mnist5k", "arch": "resnet18", "width": 1.0, "seed": seed, "pretraining": p,
                             "module": module, "n_images": 150, "n_vectors": 1500, "channels": 64 * 2 ** j,
                             "mmd2": mmd + rng.normal(0, 0.003), "mmd_p_value": pv, "n_permutations": 200,
                             "mmd2_lo": mmd - 0.02, "mmd2_hi": mmd + 0.02,
                             "mmd_bandwidth": 1.0, "detector_auroc": auc,
                             "detector_auroc_lo": float(np.quantile(boot, 0.025)),
                             "detector_auroc_hi": float(np.quantile(boot, 0.975)), "detector_acc": auc - 0.05,
                             "n_train": 1000, "n_test": 500, "seconds": 1.0, "detector_auroc_boot": list(boot)})
    return _typed(pd.DataFrame(rows))


def infos() -> dict[str, dict]:
    """The info dicts workflow/rules/figures.smk builds, for the demo config."""
    analysis = {"dataset": "mnist5k", "arch": "resnet18", "cutoffs": [1, 3, 5, 8, 13, 21],
                "retrain_overrides": {"epochs": 1}, "eval": {"n": N_EVAL, "steps": 10}}
    common = {"dataset": "mnist5k", "arch": "resnet18", "width": 1.0, "attack": ATTACK, "seeds": [0, 1]}
    return {
        "cutoff": {"kind": "cutoff", "dataset": "mnist5k", "archs": ["resnet18", "vgg11_bn"], "width": 1.0,
                   "attack": ATTACK, "recipe": {"name": "mnist5k-demo", "overrides": {"epochs": 3}},
                   "retrain_recipe": {"name": "mnist5k-demo", "overrides": {"epochs": 1, "train_subset": 2000}},
                   "seeds": [0, 1]},
        "layer_cutoff": {**common, "kind": "layer_cutoff", "analysis": analysis, "module_layers": MODULE_LAYERS},
        "module_subsets": {**common, "kind": "module_subsets", "analysis": {**analysis, "subsets": None},
                           "module_layers": MODULE_LAYERS},
        "reinit": {**common, "kind": "reinit", "analysis": {"datasets": ["mnist5k"], "arch": "resnet18"}},
        "features": {**common, "kind": "features", "method": "tsne",
                     "analysis": {"dataset": "mnist5k", "arch": "resnet18", "n_images": 150, "vectors_per_image": 10,
                                  "modules": ["m1", "m2", "m3", "m4"], "methods": ["tsne"]}},
        "feature_divergence": {**common, "kind": "feature_divergence",
                               "analysis": {"dataset": "mnist5k", "arch": "resnet18", "n_images": 150,
                                            "vectors_per_image": 10}},
        "training_curves": {"kind": "training_curves", "dataset": "mnist5k", "seeds": [0, 1]},
    }


def all_figures():
    """(kind, data, info) of every figure, from the synthetic tables."""
    info = infos()
    return [("cutoff", cutoff_table(), info["cutoff"]),
            ("layer_cutoff", layer_cutoff_table(), info["layer_cutoff"]),
            ("module_subsets", module_subsets_table(), info["module_subsets"]),
            ("reinit", reinit_table(), info["reinit"]),
            ("features", pd.concat(embedding_tables(), ignore_index=True), info["features"]),
            ("feature_divergence", divergence_table(), info["feature_divergence"]),
            ("training_curves", training_curves_table(), info["training_curves"])]


def training_curves_table(seeds=(0, 1)) -> pd.DataFrame:
    """Per-epoch records: 3 pretraining epochs per net, 2 retraining epochs per cell."""
    from advlayers.report.training_curves import table_from_payloads

    payloads = {}
    for seed in seeds:
        for p in ("conventional", "adversarial"):
            for cell, epochs in [("pretrained", 3)] + [(c, 2) for c in ("m100000", "m110000", "m111000")]:
                retraining = "none" if cell == "pretrained" else ("adversarial" if p == "conventional" else
                                                                  "conventional")
                history = [{"epoch": e, "loss": 2.0 / (e + seed), "train_acc": 0.5 + 0.1 * e, "lr": 0.1,
                            "seconds": 3.0} for e in range(1, epochs + 1)]
                payloads[f"{seed}{p}{cell}"] = {"dataset": "mnist5k", "arch": "resnet18", "seed": seed, "meta": {
                    "pretraining": p, "retraining": retraining, "cell": cell, "history": history}}
    return table_from_payloads(payloads)


def variants():
    """(name, kind, data, info) of narrower cases: one pretraining (one column), one arch and seed, 8/255."""
    info = infos()
    layer = layer_cutoff_table()
    subsets = module_subsets_table(n_subsets=64, seeds=(0,))
    attack = {**ATTACK, "eps": 8 / 255, "n": None, "restarts": 2}
    return [("layer_cutoff_one_column", "layer_cutoff", layer[layer["pretraining"] == "conventional"],
             info["layer_cutoff"]),
            ("module_subsets_one_column", "module_subsets", subsets[subsets["pretraining"] == "conventional"],
             info["module_subsets"]),
            ("cutoff_one_arch", "cutoff", cutoff_table(seeds=(0,), archs=("resnet50",)),
             {**info["cutoff"], "archs": ["resnet50"], "attack": attack})]


# --------------------------------------------------------------------------- checks

def _texts(fig):
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]


@pytest.fixture(scope="module")
def drawn():
    """kind -> figure, drawn once (canvas drawn, so window extents are final)."""
    out = {}
    for name, kind, data, info in [(k, k, d, i) for k, d, i in all_figures()] + variants():
        fig = FIGURES[kind](data, info)
        fig.canvas.draw()
        out[name] = fig
    yield out
    for fig in out.values():
        matplotlib.pyplot.close(fig)


KINDS = list(FIGURES)
NAMES = KINDS + [v[0] for v in variants()]


def _title(fig) -> str:
    return fig._suptitle.get_text().replace("\u00a0", " ").replace("\n", " ")


def test_every_kind_has_a_figure():
    assert set(KINDS) == {"cutoff", "layer_cutoff", "module_subsets", "reinit", "features", "feature_divergence",
                          "training_curves"}


@pytest.mark.parametrize("kind", NAMES)
def test_paper_width_and_font_sizes(drawn, kind):
    fig = drawn[kind]
    assert fig.get_figwidth() in (FULL_WIDTH, COLUMN_WIDTH)
    assert fig.get_figheight() < 9.0
    sizes = {t.get_text()[:30]: t.get_fontsize() for t in _texts(fig)}
    bad = {t: s for t, s in sizes.items() if not 6 <= s <= 9}
    assert not bad, f"font sizes outside 6-9 pt: {bad}"


@pytest.mark.parametrize("kind", NAMES)
def test_legend_overlaps_no_axes_and_everything_is_inside(drawn, kind):
    fig = drawn[kind]
    renderer = fig.canvas.get_renderer()
    assert fig.legends, "a figure legend"
    fig_box = fig.bbox
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent(renderer)), f"legend overlaps {ax.get_title()!r}"
        assert fig_box.x0 - 1 <= box.x0 and box.x1 <= fig_box.x1 + 1 and box.y0 >= fig_box.y0 - 1
    # nothing (tick labels, titles) cut off by the figure's edge
    for ax in fig.axes:
        if ax.get_visible():
            tight = ax.get_tightbbox(renderer)
            assert tight.x0 >= -1 and tight.y0 >= -1 and tight.x1 <= fig_box.x1 + 1 and tight.y1 <= fig_box.y1 + 1


@pytest.mark.parametrize("kind", ["cutoff", "layer_cutoff", "module_subsets", "reinit", "layer_cutoff_one_column",
                                  "module_subsets_one_column", "cutoff_one_arch"])
def test_accuracy_axes_show_zero(drawn, kind):
    fig = drawn[kind]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert axes
    for ax in axes:
        lo, hi = ax.get_ylim()
        assert lo < 0 and hi > 1, (kind, ax.get_title())


def test_zero_accuracy_curve_is_drawn_inside_the_limits(drawn):
    """The synthetic conventional net has robust accuracy exactly 0: its line lies strictly inside the axes."""
    fig = drawn["cutoff"]
    zero_lines = [line for ax in fig.axes for line in ax.get_lines()
                  if len(line.get_ydata()) and np.allclose(np.asarray(line.get_ydata(), float), 0)]
    assert zero_lines
    for line in zero_lines:
        lo, hi = line.axes.get_ylim()
        assert lo < 0 < hi


def test_uncertainty_is_drawn(drawn):
    """Wilson bands (PolyCollections from fill_between) on the accuracy figures; seeds as faint markers."""
    from matplotlib.collections import PathCollection, PolyCollection

    for kind in ("cutoff", "layer_cutoff"):
        bands = [c for ax in drawn[kind].axes for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands, kind
    seeds = [c for ax in drawn["cutoff"].axes for c in ax.collections if isinstance(c, PathCollection)]
    assert seeds, "two seeds: each seed a faint marker"
    labels = [t.get_text() for t in drawn["cutoff"].legends[0].get_texts()]
    assert "95% Wilson interval" in labels and "single seed" in labels


def test_titles_come_from_the_config(drawn):
    title = _title(drawn["cutoff"])
    assert "MNIST-5k" in title and "ResNet-18" in title and "VGG-11-BN" in title and "PGD-10" in title
    assert "ε = 0.1" in title and "n = 200" in title and "2 seeds" in title
    title = _title(drawn["cutoff_one_arch"])
    assert "ResNet-50" in title and "ε = 8/255" in title and "2 restarts" in title and "full test set" in title
    assert "seed 0" in title


def test_module_subsets_title_states_the_number_of_subsets(drawn):
    title = _title(drawn["module_subsets"])
    assert "20 of 64" in title and "All 64" not in title and "all 64" not in title
    assert "all 64" in _title(drawn["module_subsets_one_column"])


def test_module_summary_semantics():
    table = module_subsets_table(n_subsets=20)
    summary = module_summary(table)
    assert list(summary.columns) == ["pretraining", "module", "membership", "metric", "median", "q25", "q75", "n",
                                     "ci_lo", "ci_hi"]
    assert (summary["ci_lo"] <= summary["median"]).all() and (summary["median"] <= summary["ci_hi"]).all()
    assert set(summary["pretraining"]) == {"conventional", "adversarial"}
    conv = summary[summary["pretraining"] == "conventional"]
    # every subset is counted once (seeds averaged), either with or without each module
    per_module = conv[conv["metric"] == "clean_acc"].groupby("module")["n"].sum()
    assert (per_module == 20).all()
    # the synthetic pattern: adversarially retraining m0 buys robustness
    m0 = conv[(conv["module"] == "m0") & (conv["metric"] == "robust_acc")].set_index("membership")["median"]
    assert m0["included"] > m0["excluded"]


def test_module_summary_medians_any_mask_form_and_grouping():
    """The one Fig. 6 summary: medians and quartiles over the subsets with / without each module, the same from a
    bitmask, from a bitmask whose leading zeros a CSV reader dropped and from module names; grouped by `by`."""
    rng = np.random.default_rng(0)
    subsets = [vocab.mask_modules(mask) for mask in vocab.all_subsets()]
    rows = [{"dataset": dataset, "pretraining": pretraining, "retrained_modules": ",".join(s) or "none",
             "clean_acc": rng.uniform(0.8, 0.9), "robust_acc": (0.5 if "m0" in s else 0.1) + rng.uniform(0, 0.01)}
            for dataset in ("d1", "d2") for pretraining in ("adversarial", "conventional") for s in subsets]
    df = pd.DataFrame(rows)
    summary = module_summary(df, by=["dataset", "pretraining"])
    assert list(summary.columns) == ["dataset", "pretraining", "module", "membership", "metric", "median", "q25",
                                     "q75", "n", "ci_lo", "ci_hi"]
    assert len(summary) == 2 * 2 * 6 * 2 * 2 and set(summary["n"]) == {32}
    assert list(pd.unique(summary["pretraining"])) == ["conventional", "adversarial"]  # the usual order
    for _, row in summary.iterrows():
        group = df[(df["dataset"] == row["dataset"]) & (df["pretraining"] == row["pretraining"])]
        has = group["retrained_modules"].str.contains(row["module"])
        values = group.loc[has if row["membership"] == "included" else ~has, row["metric"]].to_numpy()
        assert row["median"] == pytest.approx(np.median(values))
        assert row["q25"] == pytest.approx(np.percentile(values, 25))
        assert row["q75"] == pytest.approx(np.percentile(values, 75))
    m0 = summary[(summary.module == "m0") & (summary.metric == "robust_acc") & (summary.dataset == "d1")
                 & (summary.pretraining == "adversarial")].set_index("membership")["median"]
    assert m0["included"] > 0.5 > m0["excluded"]
    # a bitmask column, the same bitmasks read back as integers ('001000' -> 1000) and 'm0+m2' strings agree
    masks = [vocab.module_mask(s) for s in subsets] * 4
    by_mask = df.assign(subset=masks).drop(columns="retrained_modules")
    for same in (by_mask, by_mask.assign(subset=by_mask["subset"].astype(int)),
                 df.assign(retrained_modules=df["retrained_modules"].str.replace(",", "+"))):
        pd.testing.assert_frame_equal(module_summary(same, by=["dataset", "pretraining"]), summary)
    # no grouping: one group (the 4 rows of a subset, 2 datasets x 2 pretrainings, averaged first)
    pooled = module_summary(df, by=())
    assert list(pooled.columns) == ["module", "membership", "metric", "median", "q25", "q75", "n", "ci_lo", "ci_hi"]
    assert set(pooled["n"]) == {32}
    with pytest.raises(ValueError, match="subset"):
        module_summary(df.drop(columns="retrained_modules"))
    with pytest.raises(ValueError, match="missing column.*robust_acc"):
        module_summary(df.drop(columns="robust_acc"))


def test_reinit_ticks_are_torchvision_layer_names(drawn):
    fig = drawn["reinit"]
    bottom = [ax for ax in fig.axes if ax.get_xlabel()][-1]
    labels = [t.get_text() for t in bottom.get_xticklabels()]
    assert labels == ["none", *RESNET18_LAYERS]
    assert "layer2.0.downsample.0" in labels
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert sum("BatchNorm reset" in t for t in titles) == 2 and sum("statistics kept" in t for t in titles) == 2


def test_divergence_marks_significant_mmd(drawn):
    fig = drawn["feature_divergence"]
    stars = [t for t in _texts(fig) if t.get_text() == "*" and t.axes is not None]
    assert len(stars) == 4  # conventional net: p = 0.001 in every module and seed (Holm over 16: 0.016); adv.: 0.4


def test_save_figure_png_and_pdf_truetype(tmp_path):
    for kind, data, info in all_figures():
        fig = FIGURES[kind](data, info)
        png, pdf = tmp_path / f"{kind}.png", tmp_path / f"{kind}.pdf"
        save_figure(fig, png, pdf)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, kind
        raw = pdf.read_bytes()
        assert raw[:5] == b"%PDF-" and len(raw) > 5_000, kind
        assert b"/Subtype /Type3" not in raw, f"{kind}: Type 3 font in the PDF"
        assert b"/TrueType" in raw or b"/CIDFontType2" in raw, kind
        assert not matplotlib.pyplot.fignum_exists(fig.number), "save_figure closes the figure"
        assert not list(tmp_path.glob(".*.tmp")), "no temporaries left"
    # the PNG keeps the figure's size at 300 dpi: 7 in -> 2100 px
    from PIL import Image

    with Image.open(tmp_path / "cutoff.png") as im:
        assert im.size[0] == 2100


def test_one_pretraining_is_one_column(drawn):
    for name in ("layer_cutoff_one_column", "module_subsets_one_column"):
        assert drawn[name].get_figwidth() == COLUMN_WIDTH, name
    for name in ("cutoff", "layer_cutoff", "module_subsets", "reinit", "features", "feature_divergence"):
        assert drawn[name].get_figwidth() == FULL_WIDTH, name


# --------------------------------------------------------------------------- the report's caption


@pytest.mark.parametrize("kind", KINDS)
def test_caption_renders_from_the_config(kind):
    """workflow/report/figure.rst renders (as `snakemake --report` does: Jinja, then docutils) for every kind,
    without reStructuredText errors, and names what ran."""
    from pathlib import Path
    from types import SimpleNamespace

    jinja2 = pytest.importorskip("jinja2")
    core = pytest.importorskip("docutils.core")
    template = (Path(__file__).resolve().parents[1] / "workflow" / "report" / "figure.rst").read_text()
    info = infos()[kind]
    stem = {"cutoff": "cutoff_mnist5k", "features": "features_tsne"}.get(kind, kind)
    snakemake = SimpleNamespace(params=SimpleNamespace(info=info), wildcards=SimpleNamespace(figure=stem),
                                output=[f"results/figures/{stem}.png"])
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=snakemake)
    html = core.publish_parts(text, writer="html", settings_overrides={"report_level": 2})["body"]
    assert "System Message" not in html and "system-message" not in html, text
    if kind == "training_curves":  # nothing attacked: tests/test_training_curves.py checks its caption
        assert "mnist5k" in text and "Attack:" not in text
        return
    assert "mnist5k" in text and "resnet18" in text and "PGD-10" in text and "eps 0.1" in text
    if kind not in ("features", "feature_divergence"):
        assert "200 test images" in text
    if kind not in ("features", "feature_divergence", "module_subsets"):
        assert "95% Wilson" in text
    if kind == "cutoff":
        assert "epochs=3" in text and "train_subset=2000" in text
    if kind == "module_subsets":
        assert "all 64" in text


@pytest.mark.parametrize("name", ["workflow", "table", "claims"])
def test_report_texts_render(name):
    from pathlib import Path
    from types import SimpleNamespace

    jinja2 = pytest.importorskip("jinja2")
    core = pytest.importorskip("docutils.core")
    template = (Path(__file__).resolve().parents[1] / "workflow" / "report" / f"{name}.rst").read_text()
    snakemake = SimpleNamespace(config={"datasets": {"mnist5k": {}}, "seeds": [0, 1]},
                                wildcards=SimpleNamespace(table="cutoff"),
                                output=SimpleNamespace(table="results/tables/claims.parquet")
                                if name == "claims" else ["results/tables/cutoff.parquet"])
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=snakemake,
                                                                                                 files=[])
    html = core.publish_parts(text, writer="html", settings_overrides={"report_level": 2})["body"]
    assert "System Message" not in html and "system-message" not in html, text
    assert len(text.splitlines()) <= (40 if name == "workflow" else 20)  # the landing page: tests/test_report.py


# --------------------------------------------------------------------------- only what was measured


def _joined_pairs(line) -> list[tuple[float, float]]:
    """The (x0, x1) pairs a Line2D joins with a visible segment (NaN breaks the line; 'None' style: none)."""
    if line.get_linestyle() in ("None", "none", " ", ""):
        return []
    xs = np.asarray(line.get_xdata(), float)
    ys = np.asarray(line.get_ydata(), float)
    ok = ~(np.isnan(xs) | np.isnan(ys))
    return [(xs[i], xs[i + 1]) for i in range(len(xs) - 1) if ok[i] and ok[i + 1]]


def _data_lines(fig):
    """The curves of a figure: lines in data coordinates (axhline/axvline references are in blended axes
    coordinates and span the axes on purpose)."""
    return [line for ax in fig.axes for line in ax.get_lines()
            if line.get_transform() == ax.transData and line.get_marker() not in ("_", "|")]  # not error bar caps


def test_lines_join_only_neighbouring_measured_cutoffs():
    """Cut-offs 0, 1, 3, 6 measured (2, 4, 5 not run): markers at all four, a line only 0-1; Fig. 5 with k = 0, 1,
    3, 5, 8, 13, 21: a line only 0-1. The markers sit at the measured points."""
    table = cutoff_table(seeds=(0,), archs=("resnet18",))
    table = table[table["cutoff"].isna() | table["cutoff"].isin([0, 1, 3, 6])]
    fig = FIGURES["cutoff"](table, infos()["cutoff"])
    pairs = {p for line in _data_lines(fig) for p in _joined_pairs(line)}
    assert pairs and pairs <= {(0.0, 1.0)}, pairs
    measured = {float(x) for line in _data_lines(fig) for x in line.get_xdata() if not np.isnan(x)}
    assert measured <= {0.0, 1.0, 3.0, 6.0} and {1.0, 3.0} <= measured
    assert all(line.get_marker() not in ("None", "", None) for line in _data_lines(fig))
    matplotlib.pyplot.close(fig)
    fig = FIGURES["layer_cutoff"](layer_cutoff_table(), infos()["layer_cutoff"])
    pairs = {p for line in _data_lines(fig) for p in _joined_pairs(line)}
    assert pairs == {(0.0, 1.0)}, pairs
    matplotlib.pyplot.close(fig)


def test_full_cutoff_grid_is_one_line():
    """All seven cut-offs measured: the line joins each neighbour (nothing left out)."""
    fig = FIGURES["cutoff"](cutoff_table(seeds=(0,), archs=("resnet18",)), infos()["cutoff"])
    for line in _data_lines(fig):
        assert _joined_pairs(line) == [(float(c), float(c + 1)) for c in range(6)]
    matplotlib.pyplot.close(fig)


def test_reinit_layers_are_not_joined(drawn):
    lines = _data_lines(drawn["reinit"])
    assert lines and all(_joined_pairs(line) == [] for line in lines)  # categorical axis: markers only
    assert all(line.get_marker() in ("o", "^", "D") for line in lines)  # D: the original net


def test_isolated_points_have_error_bars_and_runs_bands():
    from matplotlib.collections import LineCollection, PolyCollection
    from advlayers.report.figures.style import joined_runs

    assert joined_runs(np.array([0.0, 1.0, 3.0, 6.0]), range(7)) == [[0, 1], [2], [3]]
    assert joined_runs(np.array([0.0, 1.0]), None) == [[0], [1]]
    fig = FIGURES["layer_cutoff"](layer_cutoff_table(), infos()["layer_cutoff"])
    ax = fig.axes[0]
    assert [c for c in ax.collections if isinstance(c, PolyCollection)]  # the 0-1 run: a band
    assert [c for c in ax.collections if isinstance(c, LineCollection)]  # 3, 5, 8, ...: error bars
    matplotlib.pyplot.close(fig)


def test_module_subsets_intervals_are_95_percent_intervals_of_the_median(drawn):
    from advlayers.report.figures.module_subsets import median_interval

    x = np.arange(1, 11, dtype=float)  # 10 values: ranks 2 and 9 (P(Bin(10, .5) <= 1) = 1.1%)
    assert median_interval(x) == (2.0, 9.0)
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0) and np.isnan(median_interval([])[0])
    labels = [t.get_text() for t in drawn["module_subsets"].legends[0].get_texts()]
    assert "95% interval of the median" in labels and not any("percentile" in t for t in labels)
    only_early = module_subsets_table(n_subsets=20, seeds=(0,))
    only_early = only_early[only_early["subset"].str[3:] == "000"]  # no subset retrains m3-m5
    fig = FIGURES["module_subsets"](only_early, infos()["module_subsets"])
    assert any(t.get_text() == "none run" for ax in fig.axes for t in ax.texts)
    matplotlib.pyplot.close(fig)


def test_divergence_stars_are_holm_corrected():
    from advlayers.report.figures.divergence import holm

    assert np.allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan], equal_nan=True)
    table = divergence_table(seeds=(0,))
    from matplotlib.collections import LineCollection

    assert [c for c in FIGURES["feature_divergence"](table, infos()["feature_divergence"]).axes[0].collections
            if isinstance(c, LineCollection)], "MMD bars carry their 95% intervals"
    matplotlib.pyplot.close("all")
    for p, stars in ((0.01, 0), (0.005, 8)):  # 8 tests: Holm multiplies the smallest p by 8 (0.08, 0.04)
        fig = FIGURES["feature_divergence"](table.assign(mmd_p_value=p), infos()["feature_divergence"])
        assert sum(t.get_text() == "*" for t in fig.axes[0].texts) == stars, p
        assert any("Holm" in t.get_text() for t in fig.legends[0].get_texts())
        matplotlib.pyplot.close(fig)


def test_features_densities_are_filled_regions_green_clean_red_adversarial(drawn):
    """Fig. 8 as in the paper: per condition filled density regions (seaborn.kdeplot, 4 iso-proportion levels)
    in green (clean) or red (adversarial), with solid vs dashed edges in the condition's colour."""
    from matplotlib.colors import to_rgb
    from matplotlib.contour import ContourSet

    from advlayers.report.figures.features import DENSITY

    for ax in drawn["features"].axes:
        sets = [c for c in ax.collections if isinstance(c, ContourSet)]
        filled = [c for c in sets if c.filled]
        edges = [c for c in sets if not c.filled]
        assert len(filled) == len(edges) == 2 and all(len(c.levels) == 5 for c in sets)
        (r0, g0, _), (r1, g1, _) = (c.get_facecolor()[-1][:3] for c in filled)  # the densest region of each
        assert g0 > r0 and r1 > g1, "clean green, adversarial red"
        for c, (color, ls) in zip(edges, DENSITY.values()):
            assert tuple(c.get_edgecolor()[0][:3]) == pytest.approx(to_rgb(color))
            assert (c.get_linestyle()[0][1] is None) == (ls == "-")  # dashed edges: a dash pattern


def test_subsets_caption_counts_the_arch_own_modules():
    """A four-module arch's Fig. 6 caption says 'of the 16' subsets of m0..m3, not the paper's 64 of m0..m5."""
    import copy
    from pathlib import Path
    from types import SimpleNamespace

    jinja2 = pytest.importorskip("jinja2")
    template = (Path(__file__).resolve().parents[1] / "workflow" / "report" / "figure.rst").read_text()
    info = copy.deepcopy(infos()["module_subsets"])
    info["analysis"] = {**(info.get("analysis") or {}), "subsets": ["0000", "1000", "0100", "1100"]}
    info["module_layers"] = [1, 2, 2, 1]
    snakemake = SimpleNamespace(params=SimpleNamespace(info=info), wildcards=SimpleNamespace(figure="module_subsets"),
                                output=["results/figures/module_subsets.png"])
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=snakemake)
    assert "4 of the 16 subsets of m0..m3" in " ".join(text.split()) and "64" not in text
