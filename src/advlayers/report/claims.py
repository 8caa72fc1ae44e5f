"""The paper's claims, each tested from a run's own tables with a 95% interval and a verdict.

Statistics, thresholds and verdict rule were fixed before any demo result was looked at (this docstring and
the CLAIMS table below are the record; results/claims.md repeats them). Words of the paper map to numbers:

* **G**, the robustness gap: robust accuracy of the adversarially pretrained net minus that of the
  conventionally pretrained one (same dataset, arch, attack, test images). Fractions "of the robustness" are
  fractions of G.
* "most" = more than half: MOST = 0.5.
* "poor", "plateaus", "flatten" = less than a quarter: SMALL = 0.25; "far above", "far more" = more than a
  quarter: FAR = 0.25.
* "marginal effect on clean accuracy" = a clean-accuracy drop of less than MARGINAL = 3 points.
* "differ substantially" (features) = a detector separates clean from adversarial vectors with held-out
  AUROC above SEPARABLE = 0.75.

Verdict: **holds** if the 95% interval lies entirely on the claim's side of the threshold, **fails** if it
lies entirely on the other side, **inconclusive** if it straddles the threshold, **not run** if the config
produced none of the cells the claim needs.

Intervals: percentile bootstrap (B = 2000) over the test images, one draw shared by every net of a claim, so
comparisons are paired on the same images (the evaluation subset is the same for every net); with several
training seeds the seeds are resampled first (two-stage bootstrap), so the seed spread enters the interval
(`advlayers.stats.bootstrap`). C8 uses the detector's image-cluster bootstrap replicates, paired across
modules and nets by a shared image draw (`advlayers.divergence`).

Claims (paper §4-6; "c3" is the largest configured before-cut-off <= 3, "c2" the smallest after-cut-off >= 2):

C0  precondition: adversarial pretraining buys robustness, G > 0.10.
C1a Fig. 2-4 (i): (rob(before c3) - rob(conv)) / G > MOST.
C1b Fig. 2-4 (i), plateau: (rob(before cmax) - rob(before c3)) / G < SMALL (cmax: the largest before-cut-off > 3).
C2  Fig. 2-4 (ii): (rob(after c2) - rob(conv)) / G < SMALL.
C3a Fig. 2-4 (iii): (rob(adv) - rob(before 2)) / G > MOST (robustness removed by conventionally retraining m0-m1).
C3b Fig. 2-4 (iii): clean(before 2) - clean(adv) > -MARGINAL.
C4  Fig. 2-4 (iv): (rob(after c2) - rob(conv)) / G > MOST.
C5a Fig. 5: per-layer robust gain of the first layer minus the largest per-layer gain of any later interval of
    configured layer cut-offs > 0 (gains per layer: (rob(k_j) - rob(k_j-1)) / (k_j - k_j-1), k = 0 the net).
C5b Fig. 5: (rob(k_last) - rob(k=7)) / G < SMALL.
C6a Fig. 6: (median rob of the subsets retraining m0 - median of those that do not) / G > FAR.
C6b Fig. 6: the same for m1.
C7a Fig. 7 (a): conventional net, mean over the layers of m0-m1 of rob(rewound) - rob(original) > 0.
C7b Fig. 7 (b): largest increase of susceptibility 1 - rob/clean by rewinding one layer (either net; layers whose
    rewind leaves clean >= 0.5) < SMALL.
C7c Fig. 7 caption: adversarial net, (mean robust drop rewinding m0-m1 layers - mean drop rewinding m3-m5
    layers) / rob(original) > FAR.
C7d Fig. 7 (d): adversarial net, mean over layers of (clean drop - robust drop) > 0.
C8a Fig. 8a: conventional net, detector AUROC after m1 > SEPARABLE.
C8b Fig. 8a: conventional net, AUROC(m4) - max AUROC(other modules) > -0.01 (m4 the most separable, ties within
    one AUROC point).
C8c Fig. 8b: max over modules of AUROC(adversarial net) - AUROC(conventional net) < 0.
"""

# Length: the claims' checkers (C0-C8) and the verdict table live together; each checker is short.

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..grid import vocabulary as vocab
from ..stats import bootstrap

log = logging.getLogger(__name__)

MOST, SMALL, FAR, MARGINAL, SEPARABLE = 0.5, 0.25, 0.25, 0.03, 0.75
N_BOOT = 2000
VERDICTS = ("holds", "fails", "inconclusive", "not run")


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str
    text: str
    statistic: str
    threshold: float
    side: str  # ">": holds when the statistic is above the threshold; "<": below


CLAIMS = [
    Claim("C0", "Fig. 2-4", "adversarial pretraining buys robustness (precondition of every ratio below)",
          "G = rob(adv pretrained) - rob(conv pretrained)", 0.10, ">"),
    Claim("C1a", "Fig. 2-4 (i)", "adversarially retraining only the first modules (before cut-off <= 3) of a "
          "conventional net gives most of the adversarial net's robustness",
          "(rob(i, before c3) - rob(conv)) / G", MOST, ">"),
    Claim("C1b", "Fig. 2-4 (i)", "robustness plateaus after the first three modules",
          "(rob(i, before cmax) - rob(i, before c3)) / G", SMALL, "<"),
    Claim("C2", "Fig. 2-4 (ii)", "adversarially retraining only the modules after cut-off >= 2 gives poor robustness",
          "(rob(ii, after c2) - rob(conv)) / G", SMALL, "<"),
    Claim("C3a", "Fig. 2-4 (iii)", "conventionally retraining the first two modules of the adversarial net "
          "removes most of its robustness", "(rob(adv) - rob(iii, before 2)) / G", MOST, ">"),
    Claim("C3b", "Fig. 2-4 (iii)", "... with a marginal effect on clean accuracy",
          "clean(iii, before 2) - clean(adv)", -MARGINAL, ">"),
    Claim("C4", "Fig. 2-4 (iv)", "conventionally retraining only the modules after cut-off >= 2 keeps most of the "
          "robustness", "(rob(iv, after c2) - rob(conv)) / G", MOST, ">"),
    Claim("C5a", "Fig. 5", "the largest single gain comes from the first layer",
          "gain/layer(first layer) - max gain/layer(later intervals)", 0.0, ">"),
    Claim("C5b", "Fig. 5", "gains flatten after the first seven layers", "(rob(k_last) - rob(k=7)) / G", SMALL, "<"),
    Claim("C6a", "Fig. 6", "median robust accuracy of the subsets that adversarially retrain m0 is far above that "
          "of those that do not", "(median rob(m0 in S) - median rob(m0 not in S)) / G", FAR, ">"),
    Claim("C6b", "Fig. 6", "... and the same for m1", "(median rob(m1 in S) - median rob(m1 not in S)) / G", FAR, ">"),
    Claim("C7a", "Fig. 7 (a)", "rewinding a low-level layer of the conventional net tends to increase robust accuracy",
          "mean over m0-m1 layers of rob(rewound) - rob(original), conventional net", 0.0, ">"),
    Claim("C7b", "Fig. 7 (b)", "no re-initialisation markedly increases susceptibility",
          "max over layers and nets of increase of 1 - rob/clean (layers keeping clean >= 0.5)", SMALL, "<"),
    Claim("C7c", "Fig. 7 caption", "for the adversarial net, re-initialising the initial layers costs far more "
          "robustness than re-initialising later layers",
          "(mean rob drop, m0-m1 layers - mean rob drop, m3-m5 layers) / rob(original), adversarial net", FAR, ">"),
    Claim("C7d", "Fig. 7 (d)", "clean accuracy drops more than robust accuracy under re-initialisation",
          "mean over layers of (clean drop - robust drop), adversarial net", 0.0, ">"),
    Claim("C8a", "Fig. 8a", "clean and adversarial activations of the conventional net differ already after m1",
          "detector AUROC after m1, conventional net", SEPARABLE, ">"),
    Claim("C8b", "Fig. 8a", "... and differ most after m4",
          "AUROC(m4) - max AUROC(other modules), conventional net", -0.01, ">"),
    Claim("C8c", "Fig. 8b", "the adversarially trained net's clean and adversarial activations are closer at every module",
          "max over modules of AUROC(adversarial net) - AUROC(conventional net)", 0.0, "<"),
]
BY_ID = {c.id: c for c in CLAIMS}
COLUMNS = ("claim", "figure", "claim_text", "statistic", "dataset", "arch", "variant", "attack", "value", "ci_lo",
           "ci_hi", "threshold", "side", "verdict", "cells", "n_images", "n_seeds", "note")


def verdict(lo: float, hi: float, threshold: float, side: str) -> str:
    """holds / fails / inconclusive from a 95% interval (nan bounds: inconclusive)."""
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    above, below = lo > threshold, hi < threshold
    if side == ">":
        return "holds" if above else "fails" if below else "inconclusive"
    return "holds" if below else "fails" if above else "inconclusive"


def _row(claim: Claim, dataset="", arch="", variant="", attack="", *, value=math.nan, lo=math.nan, hi=math.nan,
         cells=(), n_images=0, n_seeds=0, note="", status=None) -> dict:
    return {"claim": claim.id, "figure": claim.figure, "claim_text": claim.text, "statistic": claim.statistic,
            "dataset": dataset, "arch": arch, "variant": variant, "attack": attack, "value": value, "ci_lo": lo,
            "ci_hi": hi, "threshold": claim.threshold, "side": claim.side,
            "verdict": status or verdict(lo, hi, claim.threshold, claim.side), "cells": ", ".join(cells),
            "n_images": n_images, "n_seeds": n_seeds, "note": note}


def _ratio(num, den):
    return num / den if den > 0 else math.nan


# --------------------------------------------------------------------------- outcomes of cells


class Outcomes:
    """Per-sample correctness of the evaluated nets of one (dataset, arch, attack), as (seeds, images) arrays
    aligned on the test images every net was evaluated on."""

    def __init__(self, table: pd.DataFrame):
        self.table = table
        self.seeds = sorted(table["seed"].unique())
        images = table.groupby(["pretraining", "cell", "seed"])["test_index"].apply(frozenset)
        common = frozenset.intersection(*images) if len(images) else frozenset()
        self.images = np.array(sorted(common))
        self._pivot = {}
        for key, part in table[table["test_index"].isin(self.images)].groupby(["pretraining", "cell"]):
            self._pivot[key] = part

    def has(self, pretraining: str, cell: str) -> bool:
        part = self._pivot.get((pretraining, cell))
        return part is not None and sorted(part["seed"].unique()) == self.seeds

    def array(self, pretraining: str, cell: str, metric: str) -> np.ndarray:
        part = self._pivot[(pretraining, cell)]
        column = "robust_correct" if metric == "robust" else "clean_correct"
        wide = part.pivot(index="seed", columns="test_index", values=column).reindex(index=self.seeds,
                                                                                    columns=self.images)
        return wide.to_numpy(dtype=float)


def _test(claim: Claim, outcomes: Outcomes, needed: dict[str, tuple[str, str, str]],
          statistic: Callable[[dict], float], labels: tuple, note: str = "") -> dict:
    """Bootstrap `statistic` over the cells in `needed` ({name: (pretraining, cell, metric)})."""
    missing = sorted({f"{p}/{c}" for p, c, _ in needed.values() if not outcomes.has(p, c)})
    if missing:
        return _row(claim, *labels, status="not run", note=f"missing evaluations: {', '.join(missing)}")
    arrays = {name: outcomes.array(*key) for name, key in needed.items()}
    value, lo, hi = bootstrap(arrays, statistic, n_boot=N_BOOT, seed=0)
    cells = sorted({f"{p}/{c}" for p, c, _ in needed.values()})
    return _row(claim, *labels, value=value, lo=lo, hi=hi, cells=cells, n_images=len(outcomes.images),
                n_seeds=len(outcomes.seeds), note=note)


def _gap(a):
    return a["adv_robust"] - a["conv_robust"]


PRE = {"conv_robust": ("conventional", "pretrained", "robust"), "adv_robust": ("adversarial", "pretrained", "robust")}


# --------------------------------------------------------------------------- C0-C4: the cut-off experiment


def _cutoff_claims(cutoff: pd.DataFrame, outcomes: Outcomes, labels: tuple) -> list[dict]:
    dataset, arch = labels[0], labels[1]
    coords = cutoff[(cutoff["dataset"] == dataset) & (cutoff["arch"] == arch)]

    def cell(pretraining, direction, c):
        hit = coords[(coords["pretraining"] == pretraining) & (coords["direction"] == direction) & (coords["cutoff"] == c)]
        return hit["cell"].iloc[0] if len(hit) else None

    def cutoffs(direction):
        return sorted(int(c) for c in coords.loc[coords["direction"] == direction, "cutoff"].dropna().unique())

    before, after = cutoffs("before"), cutoffs("after")
    rows = [_test(BY_ID["C0"], outcomes, PRE, _gap, labels)]
    c3 = max([c for c in before if 1 <= c <= 3], default=None)
    cmax = max([c for c in before if c > 3], default=None)
    c2 = min([c for c in after if c >= 2], default=None)
    if c3 is None:
        rows.append(_row(BY_ID["C1a"], *labels, status="not run", note="no before-cut-off in 1..3"))
    else:
        rows.append(_test(BY_ID["C1a"], outcomes, {**PRE, "x": ("conventional", cell("conventional", "before", c3), "robust")},
                          lambda a: _ratio(a["x"] - a["conv_robust"], _gap(a)), labels, note=f"c3 = {c3}"))
    if c3 is None or cmax is None:
        rows.append(_row(BY_ID["C1b"], *labels, status="not run", note="needs before-cut-offs <= 3 and > 3"))
    else:
        rows.append(_test(BY_ID["C1b"], outcomes, {
            **PRE, "x3": ("conventional", cell("conventional", "before", c3), "robust"),
            "xmax": ("conventional", cell("conventional", "before", cmax), "robust")},
            lambda a: _ratio(a["xmax"] - a["x3"], _gap(a)), labels, note=f"c3 = {c3}, cmax = {cmax}"))
    for claim, pretraining in (("C2", "conventional"), ("C4", "adversarial")):
        if c2 is None:
            rows.append(_row(BY_ID[claim], *labels, status="not run", note="no after-cut-off >= 2"))
            continue
        rows.append(_test(BY_ID[claim], outcomes, {**PRE, "x": (pretraining, cell(pretraining, "after", c2), "robust")},
                          lambda a: _ratio(a["x"] - a["conv_robust"], _gap(a)), labels, note=f"c2 = {c2}"))
    if 2 not in before:
        rows += [_row(BY_ID[c], *labels, status="not run", note="no before-cut-off 2") for c in ("C3a", "C3b")]
    else:
        b2 = cell("adversarial", "before", 2)
        rows.append(_test(BY_ID["C3a"], outcomes, {**PRE, "x": ("adversarial", b2, "robust")},
                          lambda a: _ratio(a["adv_robust"] - a["x"], _gap(a)), labels))
        rows.append(_test(BY_ID["C3b"], outcomes, {"adv_clean": ("adversarial", "pretrained", "clean"),
                                                   "x": ("adversarial", b2, "clean")},
                          lambda a: a["x"] - a["adv_clean"], labels))
    return rows


# --------------------------------------------------------------------------- C5, C6: layer cut-offs, subsets


def _layer_claims(layer: pd.DataFrame | None, outcomes: Outcomes, labels: tuple) -> list[dict]:
    if layer is None:
        return [_row(BY_ID[c], *labels, status="not run", note="no layer_cutoff analysis") for c in ("C5a", "C5b")]
    coords = layer[(layer["dataset"] == labels[0]) & (layer["arch"] == labels[1]) &
                   (layer["pretraining"] == "conventional") & (layer["direction"] == "before")]
    if coords.empty:
        return [_row(BY_ID[c], *labels, status="not run", note="no conventional -> adversarial layer cut-offs")
                for c in ("C5a", "C5b")]
    cells = coords.drop_duplicates("layer_cutoff").set_index("layer_cutoff")["cell"].to_dict()
    ks = sorted(int(k) for k in cells)
    needed = {f"k{k}": ("conventional", cells[k], "robust") for k in ks}
    rows = []
    if 1 in ks and len([k for k in ks if k > 1]) >= 1:
        def first_layer_gain(a):
            gains = [(a[f"k{k}"] - a[f"k{prev}"]) / (k - prev) for prev, k in zip(ks, ks[1:])]
            return gains[ks.index(1) - 1] - max(gains[ks.index(1):])

        if 0 not in ks:
            rows.append(_row(BY_ID["C5a"], *labels, status="not run", note="no k = 0 (pretrained) row"))
        else:
            rows.append(_test(BY_ID["C5a"], outcomes, needed, first_layer_gain, labels))
    else:
        rows.append(_row(BY_ID["C5a"], *labels, status="not run", note="needs layer cut-off 1 and a later one"))
    if 7 in ks and ks[-1] > 7:
        rows.append(_test(BY_ID["C5b"], outcomes, {**PRE, "k7": needed["k7"], "last": needed[f"k{ks[-1]}"]},
                          lambda a: _ratio(a["last"] - a["k7"], _gap(a)), labels, note=f"k_last = {ks[-1]}"))
    else:
        rows.append(_row(BY_ID["C5b"], *labels, status="not run", note="needs layer cut-off 7 and a larger one"))
    return rows


def _subset_claims(subsets: pd.DataFrame | None, outcomes: Outcomes, labels: tuple) -> list[dict]:
    if subsets is None:
        return [_row(BY_ID[c], *labels, status="not run", note="no module_subsets analysis") for c in ("C6a", "C6b")]
    coords = subsets[(subsets["dataset"] == labels[0]) & (subsets["arch"] == labels[1]) &
                     (subsets["pretraining"] == "conventional")].drop_duplicates("subset")
    masks = coords.set_index("subset")["cell"].to_dict()
    rows = []
    for claim, module in (("C6a", 0), ("C6b", 1)):
        inside = [m for m in masks if m[module] == "1"]
        outside = [m for m in masks if m[module] == "0"]
        if len(inside) < 2 or len(outside) < 2:
            rows.append(_row(BY_ID[claim], *labels, status="not run", note=f"needs >= 2 subsets with and without m{module}"))
            continue
        needed = {**PRE, **{f"s{m}": ("conventional", masks[m], "robust") for m in masks}}

        def median_gap(a, inside=inside, outside=outside):
            return _ratio(np.median([a[f"s{m}"] for m in inside]) - np.median([a[f"s{m}"] for m in outside]), _gap(a))

        rows.append(_test(BY_ID[claim], outcomes, needed, median_gap, labels,
                          note=f"{len(inside)} subsets with m{module}, {len(outside)} without"))
    return rows


# --------------------------------------------------------------------------- C7: layer re-initialisation


def _reinit_arrays(part: pd.DataFrame, metric: str) -> dict[tuple, np.ndarray]:
    """{(layer_index, operation): (seeds, images) array} of one net and BatchNorm policy."""
    column = "robust_correct" if metric == "robust" else "clean_correct"
    out = {}
    for key, rows in part.groupby(["layer_index", "operation"]):
        rows = rows.sort_values("seed")
        out[key] = np.stack([np.asarray(v, dtype=float) for v in rows[column]])
    return out


def _reinit_claims(reinit: pd.DataFrame | None) -> list[dict]:
    if reinit is None or reinit.empty:
        return [_row(BY_ID[c], status="not run", note="no reinit analysis") for c in ("C7a", "C7b", "C7c", "C7d")]
    rows = []
    for (dataset, arch, policy), part in reinit.groupby(["dataset", "arch", "bn_policy"]):
        labels = (dataset, arch, f"bn_policy={policy}", part["attack"].iloc[0])
        nets = {p: part[part["pretraining"] == p] for p in vocab.PRETRAININGS}
        if any(n.empty for n in nets.values()):
            rows += [_row(BY_ID[c], *labels, status="not run", note="needs both pretrained nets") for c in
                     ("C7a", "C7b", "C7c", "C7d")]
            continue
        arrays, layers = {}, {}
        for p, net in nets.items():
            for metric in ("clean", "robust"):
                for (index, operation), a in _reinit_arrays(net, metric).items():
                    if operation in ("none", "rewind"):
                        arrays[f"{p}/{index}/{metric}"] = a
            layers[p] = net[net["operation"] == "rewind"].drop_duplicates("layer_index")[["layer_index", "module"]]
        early = {p: [int(i) for i, m in l.itertuples(index=False) if m in ("m0", "m1")] for p, l in layers.items()}
        late = {p: [int(i) for i, m in l.itertuples(index=False) if m in ("m3", "m4", "m5")] for p, l in layers.items()}
        everything = {p: [int(i) for i in l["layer_index"]] for p, l in layers.items()}
        n_images, n_seeds = next(iter(arrays.values())).shape[::-1]

        def run(claim, statistic, note=""):
            value, lo, hi = bootstrap(arrays, statistic, n_boot=N_BOOT, seed=0)
            return _row(BY_ID[claim], *labels, value=value, lo=lo, hi=hi, cells=["rewind, every layer", "original"],
                        n_images=n_images, n_seeds=n_seeds, note=note)

        rows.append(run("C7a", lambda a: np.mean([a[f"conventional/{i}/robust"] - a["conventional/-1/robust"]
                                                  for i in early["conventional"]])))
        # layers whose rewind keeps the net working (clean >= 0.5), fixed from the point estimates
        kept = [(p, i) for p in vocab.PRETRAININGS for i in everything[p] if arrays[f"{p}/{i}/clean"].mean() >= 0.5]

        def susceptibility_increase(a):
            def susc(p, i):
                return 1 - a[f"{p}/{i}/robust"] / a[f"{p}/{i}/clean"] if a[f"{p}/{i}/clean"] > 0 else math.nan
            return max(susc(p, i) - susc(p, -1) for p, i in kept) if kept else math.nan

        rows.append(run("C7b", susceptibility_increase, note=f"{len(kept)} (net, layer) pairs keep clean >= 0.5"))
        rows.append(run("C7c", lambda a: _ratio(
            np.mean([a["adversarial/-1/robust"] - a[f"adversarial/{i}/robust"] for i in early["adversarial"]])
            - np.mean([a["adversarial/-1/robust"] - a[f"adversarial/{i}/robust"] for i in late["adversarial"]]),
            a["adversarial/-1/robust"])))
        rows.append(run("C7d", lambda a: np.mean([(a["adversarial/-1/clean"] - a[f"adversarial/{i}/clean"])
                                                  - (a["adversarial/-1/robust"] - a[f"adversarial/{i}/robust"])
                                                  for i in everything["adversarial"]])))
    return rows


# --------------------------------------------------------------------------- C8: feature distributions


def _feature_claims(divergence: pd.DataFrame | None) -> list[dict]:
    if divergence is None or divergence.empty:
        return [_row(BY_ID[c], status="not run", note="no features analysis") for c in ("C8a", "C8b", "C8c")]
    rows = []
    for (dataset, arch), part in divergence.groupby(["dataset", "arch"]):
        labels = (dataset, arch, "", "detector AUROC")
        # (seeds, B) replicates per (net, module); replicate j shares its image draw across modules and nets
        boot = {(p, m): np.stack([np.asarray(v, float) for v in g.sort_values("seed")["detector_auroc_boot"]])
                for (p, m), g in part.groupby(["pretraining", "module"])}
        point = part.groupby(["pretraining", "module"])["detector_auroc"].mean().to_dict()
        modules = sorted({m for _, m in boot})

        def interval(f):
            reps = np.array([f({k: v[:, j].mean() for k, v in boot.items()}) for j in range(min(v.shape[1] for v in boot.values()))])
            lo, hi = np.quantile(reps[np.isfinite(reps)], [0.025, 0.975])
            return f(point), float(lo), float(hi)

        n_seeds = part["seed"].nunique()
        common = {"cells": [f"{p}/{m}" for p, m in sorted(boot)], "n_images": int(part["n_test"].iloc[0]), "n_seeds": n_seeds}
        if ("conventional", "m1") in boot:
            v, lo, hi = interval(lambda a: a[("conventional", "m1")])
            rows.append(_row(BY_ID["C8a"], *labels, value=v, lo=lo, hi=hi, **common))
        else:
            rows.append(_row(BY_ID["C8a"], *labels, status="not run", note="module m1 not sampled"))
        if ("conventional", "m4") in boot and len(modules) > 1:
            v, lo, hi = interval(lambda a: a[("conventional", "m4")] - max(a[("conventional", m)] for m in modules if m != "m4"))
            rows.append(_row(BY_ID["C8b"], *labels, value=v, lo=lo, hi=hi, **common))
        else:
            rows.append(_row(BY_ID["C8b"], *labels, status="not run", note="needs m4 and another module"))
        if all(("adversarial", m) in boot and ("conventional", m) in boot for m in modules):
            v, lo, hi = interval(lambda a: max(a[("adversarial", m)] - a[("conventional", m)] for m in modules))
            rows.append(_row(BY_ID["C8c"], *labels, value=v, lo=lo, hi=hi, **common))
        else:
            rows.append(_row(BY_ID["C8c"], *labels, status="not run", note="needs both nets"))
    return rows


# --------------------------------------------------------------------------- all claims


def check_claims(tables: dict) -> pd.DataFrame:
    """Every claim per (dataset, arch) the tables can test. `tables`: {name: DataFrame or parquet path} with
    cutoff and outcomes (required) and layer_cutoff, module_subsets, reinit, feature_divergence (optional)."""
    frames = {k: (v if isinstance(v, pd.DataFrame) else pd.read_parquet(v)) for k, v in tables.items()}
    cutoff, all_outcomes = frames["cutoff"], frames["outcomes"]
    rows = []
    for (dataset, arch), coords in cutoff.groupby(["dataset", "arch"], sort=False):
        attack = coords["attack"].dropna().iloc[0]
        part = all_outcomes[(all_outcomes["dataset"] == dataset) & (all_outcomes["arch"] == arch) &
                            (all_outcomes["attack"] == attack)]
        outcomes = Outcomes(part)
        labels = (dataset, arch, "", attack)
        rows += _cutoff_claims(cutoff, outcomes, labels)
        layer, subsets = frames.get("layer_cutoff"), frames.get("module_subsets")
        if layer is not None and not ((layer["dataset"] == dataset) & (layer["arch"] == arch)).any():
            layer = None
        if subsets is not None and not ((subsets["dataset"] == dataset) & (subsets["arch"] == arch)).any():
            subsets = None
        if layer is not None or subsets is not None:
            rows += _layer_claims(layer, outcomes, labels)
            rows += _subset_claims(subsets, outcomes, labels)
    if "layer_cutoff" not in frames:
        rows += [_row(BY_ID[c], status="not run", note="no layer_cutoff analysis in the config") for c in ("C5a", "C5b")]
    if "module_subsets" not in frames:
        rows += [_row(BY_ID[c], status="not run", note="no module_subsets analysis in the config") for c in ("C6a", "C6b")]
    rows += _reinit_claims(frames.get("reinit"))
    rows += _feature_claims(frames.get("feature_divergence"))
    order = {c.id: i for i, c in enumerate(CLAIMS)}
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table = table.sort_values(["claim", "dataset", "arch", "variant"], key=lambda s: s.map(order) if s.name == "claim" else s)
    return table.reset_index(drop=True)


CUTOFF_CLAIMS = tuple(c.id for c in CLAIMS if c.figure.startswith("Fig. 2-4"))


def check_cutoff_claims(cutoff, outcomes) -> pd.DataFrame:
    """The cut-off figure's claims (C0-C4) alone, from its table and its nets' per-sample outcomes (what
    `snakemake fig2` reports without training the analyses' nets)."""
    table = check_claims({"cutoff": cutoff, "outcomes": outcomes})
    return table[table["claim"].isin(CUTOFF_CLAIMS)].reset_index(drop=True)


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def to_markdown(table: pd.DataFrame, details: bool = True) -> str:
    """results/claims.md: the verdict table, then (details) each claim's statistic and the rules."""
    lines = ["# Does this run reproduce the paper?", "",
             "| claim | figure | dataset | arch | variant | statistic | value | 95% interval | threshold | verdict |",
             "|---|---|---|---|---|---|---:|---|---|---|"]
    for r in table.itertuples():
        interval = f"[{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}]" if r.verdict != "not run" else ""
        lines.append(f"| {r.claim} | {r.figure} | {r.dataset} | {r.arch} | {r.variant} | {r.statistic} | "
                     f"{_fmt(r.value)} | {interval} | {r.side} {r.threshold:g} | **{r.verdict}** |")
    counts = table["verdict"].value_counts()
    lines += ["", "Verdicts: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)]
    if details:
        lines += ["", "## What each claim tests", ""]
        lines += [f"* **{c.id}** ({c.figure}): {c.text}. Statistic: `{c.statistic}`; holds when {c.side} {c.threshold:g}."
                  for c in CLAIMS if c.id in set(table["claim"])]
        lines += ["", "## Rules", "", __doc__.split("Claims (paper")[0].strip(), ""]
        notes = [f"* {r.claim} {r.dataset}/{r.arch} {r.variant}: {r.note}" for r in table.itertuples() if r.note]
        if notes:
            lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines) + "\n"


VERDICT_COLOURS = {"holds": "#cfe8cf", "fails": "#f4c7c3", "inconclusive": "#fce8b2", "not run": "#e8e8e8"}


def to_html(table: pd.DataFrame) -> str:
    """The claims table as a self-contained HTML page (the report shows it inline)."""
    import html

    shown = table.assign(interval=[f"[{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}]" if r.verdict != "not run" else ""
                                   for r in table.itertuples()],
                         value=table["value"].map(_fmt), threshold=[f"{r.side} {r.threshold:g}" for r in table.itertuples()])
    columns = ["claim", "figure", "dataset", "arch", "variant", "claim_text", "statistic", "value", "interval",
               "threshold", "verdict", "note"]
    rows = []
    for r in shown[columns].itertuples(index=False):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in r[:-2])
        colour = VERDICT_COLOURS.get(r.verdict, "#fff")
        rows.append(f"<tr>{cells}<td style='background:{colour}'><b>{html.escape(r.verdict)}</b></td>"
                    f"<td>{html.escape(str(r.note))}</td></tr>")
    header = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
    rules = html.escape(__doc__.split("Claims (paper")[0].strip()).replace("\n\n", "</p><p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>claims</title><style>"
            "body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
            "padding:3px 6px;vertical-align:top}</style></head><body><h2>Does this run reproduce the paper?</h2>"
            f"<table><tr>{header}</tr>{''.join(rows)}</table><h3>Rules</h3><p>{rules}</p></body></html>\n")


def run(*, tables: list, markdown: str, table_out: str | None = None, html: str | None = None,
        outcomes: list | None = None) -> pd.DataFrame:
    """The claims job. With `outcomes` (rule `cutoff_claims`): one cut-off figure's claims from its table
    (`tables` = [that table]) and its nets' outcome files; else every claim from the run's tables, also written
    as `table_out` (with the digests of its inputs) and `html`."""
    from ..io import atomic_write, file_digests, write_parquet
    from .tables import outcomes_table

    if outcomes is not None:
        result = check_cutoff_claims(tables[0], outcomes_table(outcomes))
    else:
        inputs = {Path(p).stem: p for p in tables}
        result = check_claims(inputs)
        write_parquet(table_out, result, metadata={"inputs": file_digests(inputs)})
        atomic_write(html, to_html(result))
    atomic_write(markdown, to_markdown(result))
    for row in result.itertuples():
        log.info("%s %s %s/%s: %s", row.claim, row.verdict, row.dataset, row.arch, row.statistic)
    return result
