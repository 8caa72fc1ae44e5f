"""advlayers.claims (rules v1, kept unchanged for comparison) and advlayers.stats: each claim's checker on
hand-made tables where it must hold, fail and be inconclusive; the statistics behind the intervals. The v2
rules: tests/test_claims_v2.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from advlayers.report import claim_rules, claims
from advlayers.grid import plan, vocabulary as vocab
from advlayers.stats import bootstrap, wilson

CONFIG = {"datasets": {"d": {"archs": ["resnet18"]}}, "cutoffs": {"before": [1, 2, 3, 6], "after": [1, 2, 3, 4]},
          "analyses": {"layer_cutoff": {"dataset": "d", "arch": "resnet18", "cutoffs": [1, 3, 5, 7, 21]},
                       "module_subsets": {"dataset": "d", "arch": "resnet18"}}}


def outcomes_rows(pretraining, cell, clean, robust, n, seed, rng):
    """n per-sample outcomes with exactly round(acc * n) correct, robust correct only where clean is."""
    k_clean, k_robust = round(clean * n), round(robust * n)
    order = rng.permutation(n)
    clean_ok = np.zeros(n, bool)
    clean_ok[order[:k_clean]] = True
    robust_ok = np.zeros(n, bool)
    robust_ok[order[:k_robust]] = True
    return pd.DataFrame({"dataset": "d", "arch": "resnet18", "seed": seed, "pretraining": pretraining, "cell": cell,
                         "attack": "PGD-10", "test_index": np.arange(n), "clean_correct": clean_ok,
                         "robust_correct": robust_ok})


def make_tables(accuracy, n=400, seeds=(0,)):
    """cutoff / layer_cutoff / module_subsets / outcomes tables from accuracy(pretraining, cell) -> (clean, robust)."""
    rng = np.random.default_rng(0)
    frames, out = [], {}
    for name in ("cutoff", "layer_cutoff", "module_subsets"):
        coords = pd.DataFrame(plan.table_coordinates(CONFIG, name))
        out[name] = pd.concat([coords.assign(seed=s, attack="PGD-10") for s in seeds], ignore_index=True)
    cells = {(r.pretraining, r.cell) for name in ("cutoff", "layer_cutoff", "module_subsets")
             for r in out[name].itertuples()}
    for seed in seeds:
        for pretraining, cell in sorted(cells):
            clean, robust = accuracy(pretraining, cell)
            frames.append(outcomes_rows(pretraining, cell, clean, robust, n, seed, rng))
    out["outcomes"] = pd.concat(frames, ignore_index=True)
    return out


def paper_like(pretraining, cell):
    """Accuracies with the paper's pattern: robustness lives in m0-m1."""
    if pretraining == "conventional":
        if cell == "pretrained":
            return 0.97, 0.0
        layers = vocab.cell_layers("resnet18", cell)
        if 0 not in layers:
            return 0.95, 0.03
        robust = 0.30 if layers == [0] else 0.45 if max(layers) < 5 else 0.55
        return 0.95, robust if 1 in layers or layers == [0] or max(layers) > 4 else 0.30
    if cell == "pretrained":
        return 0.96, 0.60
    layers = vocab.cell_layers("resnet18", cell)
    return 0.97, 0.02 if 0 in layers else 0.50


def no_effect(pretraining, cell):
    """Retraining anything gives the adversarial net's robustness: C1 holds, C2 fails."""
    if cell == "pretrained":
        return (0.97, 0.0) if pretraining == "conventional" else (0.96, 0.6)
    return 0.95, 0.58


def verdicts(tables):
    table = claims.check_claims(tables, rules="v1")
    assert list(table.columns) == list(claims.COLUMNS)
    return {r.claim: r for r in table.itertuples()}


def test_paper_pattern_holds():
    got = verdicts(make_tables(paper_like))
    for claim in ("C0", "C1a", "C1b", "C2", "C3a", "C3b", "C4", "C5b", "C6a"):
        assert got[claim].verdict == "holds", (claim, got[claim])
        assert got[claim].ci_lo <= got[claim].value <= got[claim].ci_hi
    assert got["C1a"].value == pytest.approx((0.55 - 0.0) / 0.6)
    assert got["C5a"].verdict == "holds"  # the first layer's gain (0.30 per layer) beats any later per-layer gain
    assert "conventional/m111000" in got["C1a"].cells and got["C1a"].n_images == 400
    for claim in ("C7a", "C8a"):
        assert got[claim].verdict == "not run"


def test_cutoff_claims_alone_match_the_whole_check():
    tables = make_tables(paper_like)
    cutoff_cells = set(tables["cutoff"]["cell"])
    only_cutoff_nets = tables["outcomes"][tables["outcomes"]["cell"].isin(cutoff_cells)]
    alone = claims.check_cutoff_claims(tables["cutoff"], only_cutoff_nets, rules="v1")
    assert list(alone["claim"]) == ["C0", "C1a", "C1b", "C2", "C3a", "C3b", "C4"]
    whole = claims.check_claims(tables, rules="v1").set_index("claim").loc[list(alone["claim"])]
    assert (alone["verdict"].values == whole["verdict"].values).all()
    assert np.allclose(alone["value"].values, whole["value"].values)


def test_no_layer_specificity_fails():
    got = verdicts(make_tables(no_effect))
    assert got["C1a"].verdict == "holds"
    assert got["C2"].verdict == "fails"  # after-cut-off retraining recovers everything: not "poor"
    assert got["C3a"].verdict == "fails"  # conventional retraining keeps the robustness
    assert got["C6a"].verdict == "fails"  # m0 makes no difference


def test_small_samples_are_inconclusive():
    def borderline(pretraining, cell):
        if cell == "pretrained":
            return (0.97, 0.0) if pretraining == "conventional" else (0.96, 0.6)
        return 0.95, 0.3  # exactly half of the gap: C1a's threshold

    got = verdicts(make_tables(borderline, n=60))
    assert got["C1a"].verdict == "inconclusive"
    assert got["C1a"].ci_lo < claim_rules.MOST < got["C1a"].ci_hi


def test_seed_spread_widens_the_interval():
    one = verdicts(make_tables(paper_like, seeds=(0,)))
    three = verdicts(make_tables(paper_like, seeds=(0, 1, 2)))
    assert three["C1a"].n_seeds == 3
    # identical seeds here: the spread adds nothing; the interval stays close to the one-seed interval
    width1 = one["C1a"].ci_hi - one["C1a"].ci_lo
    width3 = three["C1a"].ci_hi - three["C1a"].ci_lo
    assert 0.4 * width1 < width3 < 1.5 * width1


def test_missing_cells_are_not_run():
    tables = make_tables(paper_like)
    tables["cutoff"] = tables["cutoff"][~((tables["cutoff"]["direction"] == "before") & (tables["cutoff"]["cutoff"] == 2))]
    tables.pop("layer_cutoff")
    got = verdicts(tables)
    assert got["C3a"].verdict == "not run" and "before-cut-off 2" in got["C3a"].note
    assert got["C5a"].verdict == "not run"


def reinit_table(drop_early_adv=0.5, conv_gain=0.2, n=200):
    rng = np.random.default_rng(1)
    rows = []
    layer_modules = [m for m, count in zip(vocab.MODULE_NAMES, vocab.MODULE_LAYERS["resnet18"]) for _ in range(count)]
    for pretraining, base_clean, base_robust in (("conventional", 0.97, 0.0), ("adversarial", 0.95, 0.6)):
        entries = [(-1, "none", "none", base_clean, base_robust)]
        for i, module in enumerate(layer_modules):
            early = module in ("m0", "m1")
            if pretraining == "conventional":
                clean, robust = 0.6, (conv_gain if early else 0.0)
            else:
                # clean drops more than robust (C7d): early 0.65 vs drop_early_adv, late 0.25 vs 0.02
                early_clean = 0.3 if drop_early_adv else 0.9
                clean, robust = (early_clean, base_robust - drop_early_adv) if early else (0.7, 0.58)
            entries += [(i, module, "rewind", clean, robust), (i, module, "redraw", clean, robust)]
        for index, module, operation, clean, robust in entries:
            c = rng.permutation(n) < round(clean * n)
            r = c & (rng.permutation(n) < round(robust / max(clean, 1e-9) * c.sum())) if robust else np.zeros(n, bool)
            rows.append({"dataset": "d", "arch": "resnet18", "seed": 0, "pretraining": pretraining,
                         "layer_index": index, "layer": "none" if index < 0 else f"layer{index}", "module": module,
                         "operation": operation, "bn_policy": "reset", "attack": "PGD-10",
                         "clean_acc": c.mean(), "robust_acc": r.mean(), "test_index": list(range(n)),
                         "clean_correct": c.tolist(), "robust_correct": r.tolist()})
    return pd.DataFrame(rows)


def test_reinit_claims():
    tables = make_tables(paper_like)
    tables["reinit"] = reinit_table()
    got = verdicts(tables)
    assert got["C7a"].verdict == "holds" and got["C7a"].variant == "bn_policy=reset"
    assert got["C7c"].verdict == "holds"
    assert got["C7d"].verdict == "holds"
    tables["reinit"] = reinit_table(drop_early_adv=0.0, conv_gain=0.0)
    got = verdicts(tables)
    assert got["C7a"].verdict in ("fails", "inconclusive") and got["C7c"].verdict == "fails"


def divergence_table(conv=(0.9, 0.95, 0.97, 0.99), adv=(0.6, 0.65, 0.7, 0.75), noise=0.01):
    rng = np.random.default_rng(2)
    rows = []
    for pretraining, aurocs in (("conventional", conv), ("adversarial", adv)):
        for module, auroc in zip(("m1", "m2", "m3", "m4"), aurocs):
            boot = (auroc + rng.normal(0, noise, 1000)).clip(0, 1)
            rows.append({"dataset": "d", "arch": "resnet18", "seed": 0, "pretraining": pretraining, "module": module,
                         "detector_auroc": auroc, "detector_auroc_boot": boot.tolist(), "n_test": 600})
    return pd.DataFrame(rows)


def test_feature_claims():
    tables = make_tables(paper_like)
    tables["feature_divergence"] = divergence_table()
    got = verdicts(tables)
    assert [got[c].verdict for c in ("C8a", "C8b", "C8c")] == ["holds", "holds", "holds"]
    tables["feature_divergence"] = divergence_table(conv=(0.6, 0.7, 0.8, 0.7), adv=(0.7, 0.8, 0.9, 0.95))
    got = verdicts(tables)
    assert [got[c].verdict for c in ("C8a", "C8b", "C8c")] == ["fails", "fails", "fails"]


def test_markdown_lists_every_claim():
    text = claims.to_markdown(claims.check_claims(make_tables(paper_like), rules="v1"))
    for claim in claims.CLAIMS:
        assert f"| {claim.id} |" in text
    assert "holds" in text and "## Rules" in text


# --------------------------------------------------------------------------- statistics


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 100)[0] == 0 and wilson(100, 100)[1] == 1
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_bootstrap_is_paired():
    rng = np.random.default_rng(0)
    x = rng.random(300) < 0.5
    same = {"a": x[None], "b": x[None]}
    value, lo, hi = bootstrap(same, lambda a: a["a"] - a["b"])
    assert value == lo == hi == 0  # paired draws: identical cells never differ
    independent = {"a": x[None], "b": rng.permutation(x)[None]}
    _, lo, hi = bootstrap(independent, lambda a: a["a"] - a["b"])
    assert lo < 0 < hi and hi - lo > 0.05
