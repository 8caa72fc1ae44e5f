"""Claims rules v2 (docs/claims-v2.md) on hand-made tables: each new or changed statistic where it holds, fails,
is inconclusive and is confounded; G <= 0; the retraining controls; Holm; image parts; the record columns; and
the v1 path unchanged (tests/claims_v1_golden.json: what the v1 code of b487239 gave on the same tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_claims import divergence_table, make_tables, no_effect, paper_like, reinit_table

from advlayers.grid import conf, validate
from advlayers.grid import vocabulary as vocab
from advlayers.grid.vocabulary import ConfigError
from advlayers.report import claim_rules_v2 as rules
from advlayers.report import claim_verdicts, claims
from advlayers.io import write_parquet

RECORD = ("rules_version", "registration", "image_part", "n_images", "n_seeds", "seeds", "control", "control_value",
          "verdict_unadjusted", "verdict", "p_value", "holds_familywise", "note")


def with_overrides(overrides, base=paper_like):
    """paper_like accuracies, with {(pretraining, cell): (clean, robust)} replaced."""
    return lambda pretraining, cell: overrides.get((pretraining, cell), base(pretraining, cell))


def check(accuracy, n=400, seeds=(0,), cutoff_only=False, **extra):
    tables = make_tables(accuracy, n=n, seeds=seeds)
    if cutoff_only:
        table = claims.check_cutoff_claims(tables["cutoff"], tables["outcomes"])
    else:
        table = claims.check_claims({**tables, **extra})
    assert list(table.columns) == list(rules.COLUMNS)
    return {r.claim: r for r in table.itertuples()}


CONV, ADV = "conventional", "adversarial"


# --------------------------------------------------------------------------- C1b: two-sided plateau


@pytest.mark.parametrize("c3, c6, expected", [
    (0.55, 0.55, "holds"),          # d = 0
    (0.30, 0.60, "fails"),          # d = +0.5: still climbing
    (0.75, 0.50, "fails"),          # d = -0.42: a collapse is no plateau (v1, one-sided, said holds)
    (0.40, 0.55, "inconclusive"),   # d = 0.25: on the bar
])
def test_c1b_two_sided(c3, c6, expected):
    got = check(with_overrides({(CONV, "m111000"): (0.95, c3), (CONV, "m111111"): (0.95, c6)}), cutoff_only=True)
    assert got["C1b"].verdict == expected, got["C1b"]
    assert got["C1b"].value == pytest.approx((c6 - c3) / 0.6)
    assert got["A"].verdict == "passes"  # the control is fine: the verdict is C1b's own


def test_collapse_held_under_v1_and_fails_under_v2():
    tables = make_tables(with_overrides({(CONV, "m111000"): (0.95, 0.75), (CONV, "m111111"): (0.95, 0.50)}))
    v1 = claims.check_claims(tables, rules="v1").set_index("claim")
    v2 = claims.check_claims(tables, rules="v2").set_index("claim")
    assert v1.loc["C1b", "verdict"] == "holds" and v2.loc["C1b", "verdict"] == "fails"


def test_c1b_confounded_by_control_a():
    # plateau at 0.4, but retraining every module recovers only 0.4 / 0.6 of G
    got = check(with_overrides({(CONV, "m111000"): (0.95, 0.40), (CONV, "m111111"): (0.95, 0.40)}), cutoff_only=True)
    assert got["A"].value == pytest.approx(0.4 / 0.6) and got["A"].verdict == "below bar"
    for claim in ("C1a", "C1b", "C2"):
        assert got[claim].verdict == "confounded" and got[claim].control == "A", got[claim]
        assert got[claim].control_value == pytest.approx(0.4 / 0.6)
        assert "control A = 0.667 < 0.8" in got[claim].note
    assert got["C1b"].verdict_unadjusted == "holds"
    assert got["C3a"].verdict == "holds" and got["C3a"].control == "B"  # B passes: C3a, C4 are not confounded
    assert not got["C1b"].holds_familywise


# --------------------------------------------------------------------------- controls A and B


def test_controls_are_rows_with_intervals():
    got = check(paper_like, cutoff_only=True)
    a, b = got["A"], got["B"]
    assert a.value == pytest.approx(0.55 / 0.6) and a.ci_lo < a.value < a.ci_hi and a.verdict == "passes"
    assert b.value == pytest.approx(0.58 / 0.6) and b.verdict == "passes"
    assert "conventional/m111111" in a.cells and "adversarial/m111111" in b.cells


def test_control_b_below_bar_confounds_c3_c4():
    got = check(with_overrides({(ADV, "m111111"): (0.97, 0.30)}), cutoff_only=True)
    assert got["B"].verdict == "below bar" and got["B"].value == pytest.approx(0.5)
    assert [got[c].verdict for c in ("C3a", "C3b", "C4")] == ["confounded"] * 3
    assert [got[c].verdict_unadjusted for c in ("C3a", "C3b", "C4")] == ["holds"] * 3
    assert got["C1a"].verdict == "holds" and got["C0"].verdict == "holds"


def test_missing_control_cell_is_no_control():
    tables = make_tables(paper_like)
    tables["outcomes"] = tables["outcomes"][tables["outcomes"]["cell"] != "m111111"]
    table = claims.check_cutoff_claims(tables["cutoff"], tables["outcomes"])
    got = {r.claim: r for r in table.itertuples()}
    assert got["A"].verdict == "not run" and got["B"].verdict == "not run"
    assert got["C1a"].verdict == "confounded" and "no control (control A not run)" in got["C1a"].note
    assert got["C1a"].verdict_unadjusted == "holds" and math.isnan(got["C1a"].control_value)
    assert got["C4"].verdict == "confounded" and "control B" in got["C4"].note
    assert got["C1b"].verdict == "not run"  # its own cell is missing: not run stays not run
    assert got["C0"].verdict == "holds"  # needs no control


# --------------------------------------------------------------------------- C5a, C5b


@pytest.mark.parametrize("overrides, expected", [
    ({}, "holds"),                                                     # g1 = 0.30 beats every later gain
    ({(CONV, "m100000"): (0.95, 0.05)}, "fails"),                      # g1 = 0.05 < (0.45 - 0.05) / 2
    ({(CONV, "m100000"): (0.95, 0.20), (CONV, "l0-3"): (0.95, 0.60)}, "inconclusive"),  # g1 = g(1-3) = 0.2
])
def test_c5a_intersection_union(overrides, expected):
    got = check(with_overrides(overrides))
    row = got["C5a"]
    assert row.verdict == expected, row
    assert row.registration == rules.REGISTERED_V2
    assert "contradicts itself" in row.claim_text and "text's reading" in row.claim_text
    assert "intervals after k = 1: 1-3, 3-5, 5-7, 7-21" in row.note


def test_c5a_shows_the_closest_comparison():
    got = check(paper_like)
    # gains per layer after k = 1: (0.45-0.30)/2, 0, (0.55-0.45)/2, 0 -> smallest g1 - g_j is 0.30 - 0.075
    assert got["C5a"].value == pytest.approx(0.30 - 0.075)


@pytest.mark.parametrize("k7, expected", [(0.55, "holds"), (0.15, "fails"), (0.40, "inconclusive")])
def test_c5b_two_sided(k7, expected):
    got = check(with_overrides({(CONV, "l0-7"): (0.95, k7)}))
    assert got["C5b"].verdict == expected, got["C5b"]
    assert got["C5b"].value == pytest.approx((0.55 - k7) / 0.6)


def test_c5a_c5b_confounded():
    got = check(with_overrides({(CONV, "m111111"): (0.95, 0.40), (CONV, "l0-7"): (0.95, 0.40)}))
    for claim in ("C5a", "C5b", "C6a"):
        assert got[claim].verdict == "confounded" and got[claim].verdict_unadjusted != "confounded", got[claim]
    assert got["C5b"].verdict_unadjusted == "holds"


# --------------------------------------------------------------------------- G <= 0 and C0


def test_g_not_positive_is_not_testable():
    got = check(with_overrides({(ADV, "pretrained"): (0.96, 0.0)}))
    assert got["C0"].verdict == "fails" and got["C0"].value == 0
    for claim in ("C1a", "C1b", "C2", "C3a", "C4", "C5b", "C6a", "C6b", "A", "B"):
        row = got[claim]
        assert row.verdict == "not testable" and row.verdict_unadjusted == "not testable", row
        assert "G = 0.000 <= 0: adversarial pretraining bought no robustness" in row.note
        assert math.isnan(row.value) and math.isnan(row.ci_lo) and not row.holds_familywise
    assert got["C5a"].verdict != "not testable" and rules.C0_NOT_MET in got["C5a"].note
    assert got["C3b"].verdict == "confounded" and "control B not testable" in got["C3b"].note
    assert "[, ]" not in claims.to_markdown(pd.DataFrame(list(map(lambda r: r._asdict(), got.values()))).drop(
        columns="Index"))


def test_c0_not_met_is_noted():
    got = check(with_overrides({(ADV, "pretrained"): (0.96, 0.08)}), cutoff_only=True)
    assert got["C0"].verdict in ("fails", "inconclusive") and got["C0"].value == pytest.approx(0.08)
    assert got["C1a"].verdict != "not testable" and rules.C0_NOT_MET in got["C1a"].note
    assert rules.C0_NOT_MET not in check(paper_like, cutoff_only=True)["C1a"].note


# --------------------------------------------------------------------------- C7: re-initialisation


def reinit(layer_acc, originals=((0.97, 0.0), (0.95, 0.6)), n=200, seeds=(0,), arch="resnet18", module_layers=None):
    """A reinit table: original nets `originals` (conventional, adversarial) and every layer's rewind
    layer_acc(pretraining, module) -> (clean, robust), exact counts, robust correct only where clean is; the
    layers per module of `arch` (or `module_layers`)."""
    rng = np.random.default_rng(3)
    counts = module_layers or vocab.MODULE_LAYERS[arch]
    modules = [m for m, count in zip(vocab.module_names(len(counts)), counts) for _ in range(count)]
    rows = []
    for seed in seeds:
        for pretraining, original in zip(vocab.PRETRAININGS, originals):
            entries = [(-1, "none", "none", *original)]
            entries += [(i, m, "rewind", *layer_acc(pretraining, m)) for i, m in enumerate(modules)]
            for index, module, operation, clean, robust in entries:
                order = rng.permutation(n)
                c = np.zeros(n, bool)
                c[order[:round(clean * n)]] = True
                r = np.zeros(n, bool)
                r[order[:round(robust * n)]] = True
                rows.append({"dataset": "d", "arch": arch, "seed": seed, "pretraining": pretraining,
                             "layer_index": index, "layer": f"layer{index}", "module": module, "operation": operation,
                             "bn_policy": "reset", "attack": "PGD-10", "clean_acc": c.mean(), "robust_acc": r.mean(),
                             "test_index": list(range(n)), "clean_correct": c.tolist(), "robust_correct": r.tolist()})
    return pd.DataFrame(rows)


def layers(conv_early=(0.6, 0.2), conv_late=(0.6, 0.0), adv_early=(0.5, 0.55), adv_late=(0.5, 0.55)):
    def acc(pretraining, module):
        early = module in ("m0", "m1")
        if pretraining == CONV:
            return conv_early if early else conv_late
        return adv_early if early else adv_late
    return acc


def reinit_verdicts(table, rules_version="v2"):
    out = claims.check_claims({**CUTOFF_ONLY, "reinit": table}, rules=rules_version)
    return {r.claim: r for r in out.itertuples()}


CUTOFF_ONLY = {k: v for k, v in make_tables(paper_like, n=50).items() if k in ("cutoff", "outcomes")}


@pytest.mark.parametrize("conv_early, expected", [
    ((0.6, 0.20), "holds"),
    ((0.6, 0.0), "fails"),
    ((0.6, 0.02), "fails"),         # v1 said holds (any gain above 0); below the minimum effect 0.05
    ((0.6, 0.05), "inconclusive"),  # on the minimum effect
    ((0.4, 0.20), "not run"),       # no m0-m1 layer keeps clean >= 0.5
])
def test_c7a_minimum_effect(conv_early, expected):
    table = reinit(layers(conv_early=conv_early))
    got = reinit_verdicts(table)
    assert got["C7a"].verdict == expected, got["C7a"]
    assert got["C7a"].threshold == 0.05 and got["C7a"].variant == "bn_policy=reset"
    if conv_early == (0.6, 0.02):
        assert reinit_verdicts(table, "v1")["C7a"].verdict == "holds"


@pytest.mark.parametrize("adv_late, expected", [
    ((0.5, 0.45), "holds"),          # susceptibility 1 - 0.45/0.5 = 0.1 < 1 - 0.6/0.95 = 0.37: no increase
    ((0.7, 0.10), "fails"),          # 0.86 - 0.37 = 0.49 > 0.25
    ((0.7, 0.267), "inconclusive"),  # 0.62 - 0.37 = 0.25: on the bar
])
def test_c7b_intersection_union(adv_late, expected):
    got = reinit_verdicts(reinit(layers(adv_late=adv_late)))
    assert got["C7b"].verdict == expected, got["C7b"]
    assert "(net, layer) pairs keep clean >= 0.5" in got["C7b"].note


def test_c7b_not_run_without_kept_layers():
    got = reinit_verdicts(reinit(layers(conv_early=(0.3, 0), conv_late=(0.3, 0), adv_early=(0.3, 0.1),
                                        adv_late=(0.3, 0.1))))
    assert got["C7b"].verdict == "not run" and got["C7a"].verdict == "not run"


@pytest.mark.parametrize("adv, expected", [
    ((0.5, 0.55), "holds"),          # relative clean drop 0.47 vs robust 0.08
    ((0.9, 0.30), "fails"),          # 0.05 vs 0.5
    ((0.76, 0.48), "inconclusive"),  # 0.2 vs 0.2: absolute drops 0.19 vs 0.12 (v1: holds)
])
def test_c7d_relative_drops(adv, expected):
    table = reinit(layers(adv_early=adv, adv_late=adv))
    got = reinit_verdicts(table)
    assert got["C7d"].verdict == expected, got["C7d"]
    clean, robust = adv
    assert got["C7d"].value == pytest.approx((0.95 - clean) / 0.95 - (0.6 - robust) / 0.6)
    if adv == (0.76, 0.48):
        assert reinit_verdicts(table, "v1")["C7d"].verdict == "holds"


def test_reinit_needs_no_control_and_pools_seeds():
    got = reinit_verdicts(reinit(layers(), seeds=(0, 1)))
    assert all(got[c].control == "" and got[c].verdict != "confounded" for c in ("C7a", "C7b", "C7c", "C7d"))
    assert got["C7a"].n_seeds == 2 and got["C7a"].seeds == "0, 1" and rules.ONE_SEED not in got["C7a"].note


# --------------------------------------------------------------------------- C8: seeds resampled, C8c


def divergence(per_seed, noise=0.01):
    """per_seed: {seed: (conventional AUROCs m1..m4, adversarial AUROCs m1..m4)}."""
    frames = [divergence_table(conv=conv, adv=adv, noise=noise).assign(seed=seed)
              for seed, (conv, adv) in per_seed.items()]
    return pd.concat(frames, ignore_index=True)


def feature_verdicts(table, rules_version="v2"):
    out = claims.check_claims({**CUTOFF_ONLY, "feature_divergence": table}, rules=rules_version)
    return {r.claim: r for r in out.itertuples()}


def test_c8_resamples_seeds():
    # seed 0 separates after m1 (0.9), seed 1 does not (0.7): pooled 0.8 > 0.75, but the seeds disagree
    table = divergence({0: ((0.9, 0.95, 0.97, 0.99), (0.6, 0.65, 0.7, 0.75)),
                        1: ((0.7, 0.95, 0.97, 0.99), (0.6, 0.65, 0.7, 0.75))})
    v2, v1 = feature_verdicts(table), feature_verdicts(table, "v1")
    assert v1["C8a"].verdict == "holds"  # v1 averaged the seeds: the interval ignores their spread
    assert v2["C8a"].verdict == "inconclusive" and v2["C8a"].value == pytest.approx(0.8)
    assert v2["C8a"].ci_lo < 0.75 < v2["C8a"].ci_hi and v2["C8a"].n_seeds == 2


@pytest.mark.parametrize("adv, expected", [
    ((0.6, 0.65, 0.7, 0.75), "holds"),
    ((0.6, 0.65, 0.7, 0.90), "fails"),         # m4: the adversarial net is more separable
    ((0.6, 0.65, 0.7, 0.80), "inconclusive"),  # m4: equal
])
def test_c8c_intersection_union(adv, expected):
    conv = (0.9, 0.95, 0.97, 0.80)
    got = feature_verdicts(divergence({0: (conv, adv)}))
    assert got["C8c"].verdict == expected, got["C8c"]
    assert got["C8c"].value == pytest.approx(max(a - c for a, c in zip(adv, conv)))
    assert rules.ONE_SEED in got["C8c"].note


# --------------------------------------------------------------------------- verdict helpers, Holm


def test_p_values():
    reps = np.linspace(-1, 1, 2001)[:, None]
    claim = rules.BY_ID["C0"]  # one-sided '>' 0.10
    assert claim_verdicts.judge(claim, [0.0], reps)["p_value"] == pytest.approx(1100 / 2001)
    plateau = claim_verdicts.judge(rules.BY_ID["C1b"], [0.0], reps * 0.3)  # replicates in [-0.3, 0.3]
    # larger of the shares >= +0.25 and <= -0.25 (each about 1/12 + the boundary)
    assert plateau["p_value"] == pytest.approx(np.mean(reps * 0.3 >= 0.25))
    # intersection-union '<' 0: one comparison clearly below, one straddling -> inconclusive, shows the largest
    iu = claim_verdicts.judge(rules.BY_ID["C8c"], [-0.5, -0.1], np.hstack([reps * 0.1 - 0.5, reps * 0.2 - 0.1]))
    assert iu["value"] == -0.1 and iu["verdict"] == "inconclusive" and iu["p_value"] == pytest.approx(
        np.mean(reps * 0.2 - 0.1 >= 0))
    assert iu["ci_lo"] == pytest.approx(-0.29) and iu["ci_hi"] == pytest.approx(0.09)
    fails = claim_verdicts.judge(rules.BY_ID["C8c"], [-0.5, 0.5], np.hstack([reps * 0.1 - 0.5, reps * 0.1 + 0.5]))
    assert fails["verdict"] == "fails" and fails["p_value"] == 1.0
    nan = claim_verdicts.judge(claim, [math.nan], np.full((100, 1), math.nan))
    assert nan["verdict"] == "inconclusive" and nan["p_value"] == 1.0


def test_holm():
    def r(claim, p, verdict="holds"):
        return {"claim": claim, "p_value": p, "verdict": verdict, "verdict_unadjusted": verdict}
    table = pd.DataFrame([r("C0", 0.001), r("C1a", 0.005), r("C2", 0.02), r("C4", 0.001, "confounded"),
                          r("C3a", math.nan, "not run"), r("A", 0.0, "passes"), r("C5a", 0.0, "not testable")])
    out = claim_verdicts.holm(table).set_index("claim")["holds_familywise"]
    # family of 4 (not run, not testable, controls out): 0.001 <= 0.025/4, 0.001 <= 0.025/3, 0.005 <= 0.025/2,
    # 0.02 > 0.025/1? no: 0.02 <= 0.025 -> all rejected; the confounded row does not hold
    assert out.to_dict() == {"C0": True, "C1a": True, "C2": True, "C4": False, "C3a": False, "A": False,
                             "C5a": False}
    # sorted 0.001 (C0), 0.001 (C4), 0.015 (C1a) > 0.025/2: the step-down stops, C1a and C2 not rejected
    table.loc[table["claim"] == "C1a", "p_value"] = 0.015
    out = claim_verdicts.holm(table).set_index("claim")["holds_familywise"]
    assert out["C0"] and not out["C1a"] and not out["C2"]


def test_summary_line_and_familywise_column():
    table = claims.check_claims(make_tables(paper_like))
    text = claims.to_markdown(table)
    counts = table[~table["claim"].isin(["A", "B"])]["verdict"].value_counts()
    k = int(table["holds_familywise"].sum())
    assert (f"Verdicts: {counts.get('holds', 0)} holds, {counts.get('fails', 0)} fails, 0 inconclusive, "
            f"0 confounded, 0 not testable, {counts.get('not run', 0)} not run; {k} hold family-wise") in text
    assert k >= 8 and table.loc[table["claim"] == "C1a", "holds_familywise"].item()
    assert "Claims rules v2." in text and "## Registration" in text


# --------------------------------------------------------------------------- record, image parts, config


def test_record_columns_written(tmp_path):
    tables = make_tables(paper_like, seeds=(0, 1))
    tables["outcomes"] = tables["outcomes"].assign(image_part="confirmation")
    paths = []
    for name, frame in tables.items():
        path = tmp_path / f"{name}.parquet"
        write_parquet(path, frame)  # what the table jobs write: with its self-digest (read_table checks it)
        paths.append(str(path))
    claims.run(tables=paths, markdown=str(tmp_path / "claims.md"), table_out=str(tmp_path / "claims.parquet"),
               html=str(tmp_path / "claims.html"))
    table = pd.read_parquet(tmp_path / "claims.parquet")
    assert set(RECORD) <= set(table.columns)
    c1a = table.set_index("claim").loc["C1a"]
    assert (c1a.rules_version, c1a.image_part, c1a.n_seeds, c1a.seeds, c1a.control) == ("v2", "confirmation", 2,
                                                                                       "0, 1", "A")
    assert c1a.registration == rules.REGISTERED_V1 and rules.ONE_SEED not in c1a.note
    assert table.set_index("claim").loc["C1b", "registration"] == rules.REGISTERED_V2
    assert "confirmation (400)" in (tmp_path / "claims.md").read_text()
    assert "holds familywise" in (tmp_path / "claims.html").read_text()


def test_image_parts():
    tables = make_tables(paper_like, n=100)
    got = claims.check_cutoff_claims(tables["cutoff"], tables["outcomes"])
    assert set(got["image_part"]) == {"unrecorded"}  # tables made before image parts were recorded
    one_seed = got.set_index("claim").loc["C1a", "note"]
    assert rules.ONE_SEED in one_seed
    mixed = tables["outcomes"].assign(image_part=np.where(tables["outcomes"]["test_index"] < 50, "tuning",
                                                          "confirmation"))
    tuning = claims.check_cutoff_claims(tables["cutoff"], tables["outcomes"].assign(image_part="tuning"))
    assert set(tuning["image_part"]) == {"tuning"} and rules.TUNING in tuning.set_index("claim").loc["C1a", "note"]
    for version in ("v1", "v2"):
        with pytest.raises(ValueError, match=r"^claims: the evaluations mix image parts \(confirmation, tuning\)"):
            claims.check_cutoff_claims(tables["cutoff"], mixed, rules=version)


def test_rules_config_key():
    assert conf.claims_rules({}) == "v2" and conf.claims_rules({"claims": {"rules": "v1"}}) == "v1"
    config = yaml.safe_load((Path(__file__).parent / "tiny.yaml").read_text())
    assert validate.apply_schema(dict(config))["claims"] == {"rules": "v2"}
    with pytest.raises(ConfigError, match="claims.rules"):
        validate.apply_schema({**config, "claims": {"rules": "v3"}})
    with pytest.raises(ValueError, match="claims rules 'v3': choose one of v1, v2"):
        claims.check_claims(make_tables(paper_like, n=20), rules="v3")


# --------------------------------------------------------------------------- v1 unchanged


def test_v1_unchanged():
    golden = json.loads((Path(__file__).parent / "claims_v1_golden.json").read_text())
    t = make_tables(paper_like, seeds=(0, 1))
    t["reinit"] = reinit_table()
    t["feature_divergence"] = divergence_table()
    cases = {"paper_like": t, "no_effect": make_tables(no_effect, n=120)}
    for name, tables in cases.items():
        table = claims.check_claims(tables, rules="v1")
        assert "rules_version" not in table and "confounded" not in set(table["verdict"])
        got = table[["claim", "variant", "value", "ci_lo", "ci_hi", "verdict", "note"]].to_dict("records")
        assert len(got) == len(golden[name])
        for g, want in zip(got, golden[name]):
            for key, value in want.items():
                if value is None:
                    assert isinstance(g[key], float) and math.isnan(g[key]), (name, g, want)
                elif isinstance(value, float):
                    assert g[key] == pytest.approx(value, abs=1e-12), (name, g, want)
                else:
                    assert g[key] == value, (name, g, want)


def test_v2_six_modules_unchanged():
    """The claims v2 on six-module tables give exactly what they gave before the module rule for N modules
    (tests/claims_v2_golden.json: the v2 code of 47fd254 on these tables)."""
    golden = json.loads((Path(__file__).parent / "claims_v2_golden.json").read_text())
    t = make_tables(paper_like, seeds=(0, 1))
    t["reinit"] = reinit_table()
    t["feature_divergence"] = divergence_table()
    for name, tables in {"paper_like": t, "no_effect": make_tables(no_effect, n=120)}.items():
        got = claims.check_claims(tables, rules="v2")[list(golden[name][0])].to_dict("records")
        assert len(got) == len(golden[name])
        for g, want in zip(got, golden[name]):
            for key, value in want.items():
                if value is None:
                    assert isinstance(g[key], float) and math.isnan(g[key]), (name, g, want)
                else:
                    assert g[key] == value, (name, key, g, want)  # bit-identical, texts included


# --------------------------------------------------------------------------- the modules of an N-module arch


def test_module_rule_reduces_to_the_registered_modules():
    assert {k: v for k, v in rules.module_groups(6).items()} == rules.PAPER_MODULES
    assert rules.module_groups(4) == {"early": ("m0", "m1"), "late": ("m2", "m3"), "deep": ("m2",)}
    assert rules.module_groups(3) == {"early": ("m0",), "late": ("m2",), "deep": ("m1",)}
    assert rules.module_groups(9) == {"early": ("m0", "m1", "m2"), "late": ("m5", "m6", "m7", "m8"), "deep": ("m7",)}
    for n in range(2, 13):
        g = rules.module_groups(n)
        assert g["early"] and g["late"] and not set(g["early"]) & set(g["late"]), n
    for claim in rules.CLAIMS:
        assert rules.claim_for(claim.id, 6) is claim and rules.claim_for(claim.id, None) is claim
    assert rules.claim_for("C7c", 4).statistic == ("(mean rob drop, m0-m1 layers - mean rob drop, m2-m3 layers) / "
                                                   "rob(original), adversarial net")
    assert rules.claim_for("C7a", 9).statistic.startswith("mean over m0-m2 layers keeping clean >= 0.5")
    assert rules.claim_for("C8b", 4).statistic == "AUROC(m2) - max AUROC(other modules), conventional net"
    assert rules.claim_for("C8a", 9).statistic == "detector AUROC after m2, conventional net"
    assert rules.claim_for("C6b", 9).statistic == rules.BY_ID["C6b"].statistic  # m1: the second early module
    assert rules.claim_for("C7c", 4).threshold == rules.BY_ID["C7c"].threshold
    assert rules.module_note(6) == "" and "4-module arch: early modules m0-m1, late m2-m3" in rules.module_note(4)


def test_claim_text_names_the_modules_of_its_statistic():
    """A claim's text and statistic name the same modules on an N-module arch (the text marks the paper's
    six-module names it replaced); texts naming no module, and every text for N = 6, are the paper's."""
    four = rules.claim_for("C8b", 4)
    assert four.text == "... and differ most after m2 (the paper's m4, of six modules)" and "AUROC(m2)" in four.statistic
    assert rules.row(four)["claim_text"] == four.text
    assert rules.claim_for("C8a", 3).text == ("clean and adversarial activations of the conventional net differ "
                                              "already after m0 (the paper's m1, of six modules)")
    assert rules.claim_for("C6b", 9).text == rules.BY_ID["C6b"].text  # m1 again
    for claim_id in ("C6a", "C7a", "C7c"):
        assert rules.claim_for(claim_id, 4).text == rules.BY_ID[claim_id].text


def test_c7_on_a_four_module_arch():
    """C7c compares the layers of m0-m1 with those of m2-m3 (the last half) on a four-module arch, not with m3
    alone; the row says so. The arch's N comes from the vocabulary, or from the table's modules."""
    def acc(pretraining, module):
        if pretraining == CONV:
            return (0.6, 0.2) if module in ("m0", "m1") else (0.6, 0.0)
        return (0.5, 0.55) if module == "m3" else (0.5, 0.05)  # m2 costs as much as m0-m1: no contrast there

    expected = (0.55 - (2 * 0.55 + 0.05) / 3) / 0.6  # m2's two layers and m3's one; the registered m3-m5: 0.83
    vocab.register_module_layers("four", [1, 2, 2, 1])
    for arch in ("four", "unregistered4"):
        got = reinit_verdicts(reinit(acc, arch=arch, module_layers=[1, 2, 2, 1]))
        c7c = got["C7c"]
        assert c7c.arch == arch and c7c.value == pytest.approx(expected), c7c
        assert c7c.verdict == "inconclusive"  # 0.28 on the bar 0.25; by the registered m3-m5 (m3 here): 0.83, holds
        assert "m0-m1 layers - mean rob drop, m2-m3 layers" in c7c.statistic
        assert "4-module arch: early modules m0-m1, late m2-m3" in c7c.note
        assert got["C7a"].verdict == "holds" and "3 m0-m1 layers keep clean" in got["C7a"].note


def divergence_n(conv, adv, arch="four", noise=0.01):
    """A feature_divergence table with the AUROCs of modules m0.. of each net."""
    rng = np.random.default_rng(2)
    return pd.DataFrame([{"dataset": "d", "arch": arch, "seed": 0, "pretraining": p, "module": f"m{i}",
                          "detector_auroc": a, "detector_auroc_boot": (a + rng.normal(0, noise, 1000)).clip(0, 1).tolist(),
                          "n_test": 600}
                         for p, aurocs in ((CONV, conv), (ADV, adv)) for i, a in enumerate(aurocs)])


def test_c8_on_a_four_module_arch():
    """C8a after m1 (the last early module), C8b after m2 (the last before the pooling head, m4 of six)."""
    vocab.register_module_layers("four", [1, 2, 2, 1])
    got = feature_verdicts(divergence_n(conv=(0.7, 0.9, 0.99, 0.8), adv=(0.6, 0.6, 0.6, 0.6)))
    assert got["C8a"].value == pytest.approx(0.9) and got["C8a"].verdict == "holds"
    assert got["C8b"].value == pytest.approx(0.99 - 0.9) and got["C8b"].verdict == "holds"
    assert got["C8b"].statistic.startswith("AUROC(m2) - max AUROC") and "4-module arch" in got["C8b"].note
    # the row's text names the module its statistic reads, and says which the paper's (six-module) text names
    assert got["C8b"].claim_text == "... and differ most after m2 (the paper's m4, of six modules)"
    assert got["C8a"].claim_text == rules.BY_ID["C8a"].text  # m1 on four modules too: the paper's words
    assert got["C8c"].verdict == "holds"
    unknown = feature_verdicts(divergence_n(conv=(0.7, 0.9, 0.99, 0.8), adv=(0.6,) * 4, arch="unregistered4"))
    assert unknown["C8a"].verdict == "not run" and "module count of unregistered4 is unknown" in unknown["C8b"].note
    assert unknown["C8c"].verdict == "holds"


def subset_setting(n_modules, arch):
    """A v2 Setting and its module_subsets table: all 2^N subsets of an N-module arch; retraining m0 gives most
    of G (0.6), m1 a little."""
    from test_claims import outcomes_rows

    from advlayers.report import claim_checks_v2 as v2
    from advlayers.report.claim_checks import Outcomes

    rng = np.random.default_rng(0)
    masks = vocab.all_subsets(n_modules)[1:]
    frames = [outcomes_rows(CONV, "pretrained", 0.97, 0.0, 200, 0, rng),
              outcomes_rows(ADV, "pretrained", 0.96, 0.6, 200, 0, rng)]
    frames += [outcomes_rows(CONV, "m" + m, 0.95, 0.5 * (m[0] == "1") + 0.05 * (m[1] == "1"), 200, 0, rng)
               for m in masks]
    subsets = pd.DataFrame([{"dataset": "d", "arch": arch, "pretraining": CONV, "subset": m, "cell": "m" + m}
                            for m in masks])
    return v2.Setting(Outcomes(pd.concat(frames, ignore_index=True)), ("d", arch, "", "PGD-10"), "unrecorded"), subsets


def test_c6_on_three_and_four_module_archs():
    from advlayers.report import claim_checks_v2 as v2

    got = {r["claim"]: r for r in v2.subset_rows(*reversed(subset_setting(4, "unregistered4")))}
    # medians over the 15 non-empty masks: with m0 (0.55 x 4, 0.5 x 4) 0.525, without (0.05 x 4, 0 x 3) 0.05;
    # with m1 (0.55 x 4, 0.05 x 4) 0.3, without (0.5 x 4, 0 x 3) 0.5
    assert got["C6a"]["verdict"] == "holds" and got["C6a"]["value"] == pytest.approx((0.525 - 0.05) / 0.6)
    assert got["C6b"]["value"] == pytest.approx((0.3 - 0.5) / 0.6) and got["C6b"]["verdict"] == "fails"
    assert "(m1 in S)" in got["C6b"]["statistic"] and "4-module arch" in got["C6b"]["note"]
    got = {r["claim"]: r for r in v2.subset_rows(*reversed(subset_setting(3, "unregistered3")))}
    assert got["C6a"]["verdict"] == "holds" and got["C6b"]["verdict"] == "not run"
    assert "early modules of a 3-module arch are m0: no second one" in got["C6b"]["note"]
