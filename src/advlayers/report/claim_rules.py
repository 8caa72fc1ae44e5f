"""The paper's claims and the rules v1 they are tested by: statistic, threshold and verdict rule of each (the
checkers: `report.claim_checks`; the check of a run: `report.claims`; the rules v2, the default:
`report.claim_rules_v2`, registered in docs/claims-v2.md). v1 is kept unchanged (config `claims.rules: v1`).

What happened (docs/claims-v2.md, "What happened before"): these statistics, thresholds and the verdict rule
were committed in dd0f8f3, after demo results had been committed (30f5814, 266e24e), so they were written
after some results had been seen. The thresholds never moved afterwards, but the demo's settings did, on the
same 500 test images the v1 verdicts use (docs/results.md). This docstring and the CLAIMS table below are the
record of v1. Words of the paper map to numbers:

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
modules and nets by a shared image draw (`advlayers.analyses.divergence`).

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

from __future__ import annotations

import math
from dataclasses import dataclass

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


