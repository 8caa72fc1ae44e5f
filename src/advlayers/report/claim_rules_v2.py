"""The claims' rules v2 (registered in docs/claims-v2.md before any v2 result; v1: `report.claim_rules`).

What changed from v1: intervals pool training seeds (two-stage bootstrap, C8 too); C1b and C5b are two-sided
plateau tests; C5a, C7b and C8c are intersection-union tests instead of maxima inside the bootstrap; C7a has a
minimum effect (0.05) on layers whose rewind keeps clean accuracy >= 0.5; C7d compares relative drops; G <= 0
makes the fractions of G `not testable`; two retraining controls (A, B) per (dataset, arch) mark the claims
that need retraining to be long enough `confounded` when their control is below CONTROL = 0.8; a Holm
correction gives the family-wise column. Verdicts, p-values and Holm: `report.claim_verdicts`.
"""

from __future__ import annotations

import dataclasses
import math
import re

from ..grid.vocabulary import NUM_MODULES, known_archs, module_names, num_modules
from .claim_rules import CLAIMS as V1_CLAIMS
from .claim_rules import FAR, MARGINAL, MOST, SEPARABLE, SMALL, Claim  # noqa: F401 (the same words as v1)

RULES_TEXT = """Words of the paper map to numbers as in v1: G = rob(adversarially pretrained) - rob(conventionally
pretrained); MOST = 0.5 (of G), SMALL = 0.25, FAR = 0.25, MARGINAL = 0.03 (clean accuracy), SEPARABLE = 0.75
(detector AUROC).

Intervals: percentile intervals of B = 2000 two-stage bootstrap replicates (training seeds with replacement, then
test images with replacement, one image draw shared by every net of a statistic); C8 draws seeds and takes each
drawn seed's image-cluster replicate. A claim holds when its 95% interval lies entirely on its side of the
threshold, fails when entirely on the other side, is inconclusive when it straddles it, not run when the config
made none of its cells. Plateaus (C1b, C5b) hold inside (-0.25, +0.25) and fail entirely outside it;
intersection-union tests (C5a, C7b, C8c) hold when every comparison holds and fail when one fails.

Controls: A (adversarial retraining of every module of the conventional net, cell m111111) and B (conventional
retraining of every module of the adversarial net) as fractions of G; a claim that needs one (A: C1a, C1b, C2,
C5a, C5b, C6a, C6b; B: C3a, C3b, C4) is confounded when its point estimate is below 0.8 or it is missing;
verdict_unadjusted keeps the claim's own verdict. G <= 0: the fractions of G are not testable. Family-wise: Holm
over the one-sided bootstrap p-values of the claims with an interval, at 0.025."""

RULES = ("v1", "v2")
CONTROL = 0.8  # the bar of the retraining controls, judged on the point estimate
MIN_EFFECT_C7A = 0.05  # five points of robust accuracy: the smallest gain that "induces robustness"
CLEAN_KEPT = 0.5  # a rewound layer "keeps the net working" when its clean accuracy stays >= this
FAMILY_ALPHA = 0.025  # one-sided level of the Holm correction (the level of a two-sided 95% interval)
VERDICTS = ("holds", "fails", "inconclusive", "confounded", "not testable", "not run")
CONTROL_VERDICTS = ("passes", "below bar", "not testable", "not run")

REGISTERED_V2 = "v2 rule: written after tuning-image (v1) results were seen, before any confirmation-image result"
REGISTERED_V1 = "v1 rule unchanged (dd0f8f3, written after some demo results were seen)"

# kind of test: one-sided (v1's rule), plateau (two-sided, inside (-SMALL, +SMALL)), iu (intersection-union)
_CHANGED = {
    "C1b": (Claim("C1b", "Fig. 2-4 (i)", "robustness plateaus after the first three modules (a collapse is no "
                  "plateau)", "(rob(i, before cmax) - rob(i, before c3)) / G", SMALL, "inside ±"), "plateau"),
    "C5a": (Claim("C5a", "Fig. 5", "the paper contradicts itself: §5.1 'We observe the most significant gain for "
                  "the first layer', Fig. 5 caption 'We do not observe any significant contribution from a single "
                  "layer'; tested: the text's reading, the first layer's per-layer gain exceeds that of every later "
                  "interval", "gain/layer(first layer) - gain/layer(interval j), for every later j (shown: the "
                  "smallest)", 0.0, ">"), "iu"),
    "C5b": (Claim("C5b", "Fig. 5", "gains flatten after the first seven layers (a collapse is no plateau)",
                  "(rob(k_last) - rob(k=7)) / G", SMALL, "inside ±"), "plateau"),
    "C7a": (Claim("C7a", "Fig. 7 (a)", "rewinding a low-level layer of the conventional net tends to increase "
                  "robust accuracy", "mean over m0-m1 layers keeping clean >= 0.5 of rob(rewound) - rob(original), "
                  "conventional net", MIN_EFFECT_C7A, ">"), "one-sided"),
    "C7b": (Claim("C7b", "Fig. 7 (b)", "no re-initialisation markedly increases susceptibility",
                  "increase of 1 - rob/clean by rewinding a layer, for every (net, layer) keeping clean >= 0.5 "
                  "(shown: the largest)", SMALL, "<"), "iu"),
    "C7d": (Claim("C7d", "Fig. 7 (d)", "clean accuracy is strongly affected by re-initialisation while robust "
                  "accuracy is less affected", "mean over layers of clean drop / clean(original) - robust drop / "
                  "rob(original), adversarial net", 0.0, ">"), "one-sided"),
    "C8c": (Claim("C8c", "Fig. 8b", "the adversarially trained net's clean and adversarial activations are closer at "
                  "every module", "AUROC(adversarial net) - AUROC(conventional net), for every module (shown: the "
                  "largest)", 0.0, "<"), "iu"),
}
CLAIMS = [_CHANGED[c.id][0] if c.id in _CHANGED else c for c in V1_CLAIMS]
BY_ID = {c.id: c for c in CLAIMS}
KIND = {c.id: (_CHANGED[c.id][1] if c.id in _CHANGED else "one-sided") for c in CLAIMS}
REGISTRATION = {c.id: (REGISTERED_V2 if c.id in _CHANGED else REGISTERED_V1) for c in CLAIMS}

# the retraining controls (rows of their own) and which claims need which
CONTROLS = {
    "A": Claim("A", "control", "adversarial retraining control: retraining every module of the conventional net "
               "adversarially recovers G in the retraining budget", "(rob(conv, m111111) - rob(conv)) / G",
               CONTROL, ">="),
    "B": Claim("B", "control", "conventional retraining control: retraining every module of the adversarial net "
               "conventionally removes G in the retraining budget", "(rob(adv) - rob(adv, m111111)) / G",
               CONTROL, ">="),
}
CONTROL_CELL = "m111111"  # cut-off 'before 6' of a six-module net; an N-module arch: 'm' + N ones (all its modules)
NEEDS_CONTROL = {**{c: "A" for c in ("C1a", "C1b", "C2", "C5a", "C5b", "C6a", "C6b")},
                 **{c: "B" for c in ("C3a", "C3b", "C4")}}
OVER_G = ("C1a", "C1b", "C2", "C3a", "C4", "C5b", "C6a", "C6b", "A", "B")  # statistics divided by G


# --------------------------------------------------------------------------- the modules the claims name
# Registered for the paper's six modules (m0-m1, m3-m5, m4); for an arch of N modules the claims name the modules
# this rule gives, which is exactly the registered one for N = 6 (docs/claims-v2.md, "Changes after v2 results
# were seen"): early = the first ceil(N/3) modules, late = the last floor(N/2), deep = m(N-2), the last module
# before the pooling head. C6a/C6b: the first/second early module (C6b not run with one early module); C7a and
# C7c: the layers of the early (and late) modules; C8a: after the last early module; C8b: after the deep one.
PAPER_MODULES = {"early": ("m0", "m1"), "late": ("m3", "m4", "m5"), "deep": ("m4",)}


def module_groups(n: int) -> dict[str, tuple[str, ...]]:
    """{early, late, deep}: the modules the claims name, for an arch of `n` modules (PAPER_MODULES for 6)."""
    names = module_names(n)
    return {"early": names[:-(-n // 3)], "late": names[n - n // 2:], "deep": (names[max(n - 2, 0)],)}


def span(modules) -> str:
    """'m0-m1' for (m0, m1), 'm0' for (m0,)."""
    return modules[0] if len(modules) == 1 else f"{modules[0]}-{modules[-1]}"


def module_count(arch: str, modules=()) -> int | None:
    """N of `arch`: the vocabulary's (a paper arch or a registered config arch), else one more than the largest
    module index among `modules` (the module names a table holds: every layer's), else None (unknown)."""
    if arch in known_archs():
        return num_modules(arch)
    found = [int(m[1:]) for m in modules if isinstance(m, str) and re.fullmatch(r"m\d+", m)]
    return max(found) + 1 if found else None


MODULE_SPAN = re.compile(r"m\d+(?:-m\d+)?")  # a module or a span of them in a claim's text: m4, m0-m1


def claim_for(claim_id: str, n: int | None) -> Claim:
    """The claim `claim_id` whose statistic and text name the modules of an `n`-module arch (the registered claim
    for n = 6 or unknown); a text whose module names changed says which the paper's names: '... and differ most
    after m2 (the paper's m4, of six modules)'."""
    claim = BY_ID[claim_id]
    if n is None or n == NUM_MODULES:
        return claim
    paper = {k: span(v) for k, v in PAPER_MODULES.items()}
    own = {k: span(v) for k, v in module_groups(n).items()}
    words = {"C7a": {paper["early"]: own["early"]},
             "C7c": {paper["early"]: own["early"], paper["late"]: own["late"]},
             "C8a": {"m1": module_groups(n)["early"][-1]}, "C8b": {"m4": own["deep"]}}.get(claim_id, {})
    if claim_id == "C6b" and len(module_groups(n)["early"]) > 1:
        words = {"m1": module_groups(n)["early"][1]}

    def rename(text: str) -> str:
        return MODULE_SPAN.sub(lambda m: words.get(m.group(0), m.group(0)), text)

    # the text too, else a row would pair the paper's module with a statistic about another one
    replaced = [m for m in dict.fromkeys(MODULE_SPAN.findall(claim.text)) if words.get(m, m) != m]
    text = rename(claim.text) + (f" (the paper's {', '.join(replaced)}, of six modules)" if replaced else "")
    return dataclasses.replace(claim, text=text, statistic=rename(claim.statistic))


def module_note(n: int | None) -> str:
    """The note of a row whose modules follow the rule for an arch of other than six modules ('' for six)."""
    if n is None or n == NUM_MODULES:
        return ""
    g = {k: span(v) for k, v in module_groups(n).items()}
    return (f"{n}-module arch: early modules {g['early']}, late {g['late']}, deep {g['deep']} (the claims' module "
            "rule, docs/claims-v2.md)")


EXTRA_COLUMNS = ("rules_version", "registration", "image_part", "seeds", "control", "control_value",
                 "verdict_unadjusted", "p_value", "holds_familywise")
COLUMNS = ("claim", "figure", "claim_text", "statistic", "dataset", "arch", "variant", "attack", "value", "ci_lo",
           "ci_hi", "threshold", "side", "verdict", "cells", "n_images", "n_seeds", "note", *EXTRA_COLUMNS)

G_NOT_POSITIVE = ("G = {g:.3f} <= 0: adversarial pretraining bought no robustness on these images, so fractions "
                  "of G are undefined")
C0_NOT_MET = "precondition C0 not met"
ONE_SEED = "one training seed: the interval covers test images only"
TUNING = "tuning images: the demo's settings were chosen on them, so this verdict confirms nothing"


def row(claim: Claim, labels: tuple = ("", "", "", ""), *, judged: dict | None = None, cells=(), n_images=0,
        seeds=(), image_part="unrecorded", note="", status: str | None = None) -> dict:
    """One v2 row: `judged` (value, ci_lo, ci_hi, p_value, verdict: `claim_verdicts.judge`) or `status` (not run)."""
    judged = judged or {"value": math.nan, "ci_lo": math.nan, "ci_hi": math.nan, "p_value": math.nan,
                        "verdict": status}
    dataset, arch, variant, attack = labels
    notes = [n for n in (note, ONE_SEED if len(seeds) == 1 and status is None else "",
                         TUNING if image_part == "tuning" and status is None else "") if n]
    return {"claim": claim.id, "figure": claim.figure, "claim_text": claim.text, "statistic": claim.statistic,
            "dataset": dataset, "arch": arch, "variant": variant, "attack": attack, "value": judged["value"],
            "ci_lo": judged["ci_lo"], "ci_hi": judged["ci_hi"], "threshold": claim.threshold, "side": claim.side,
            "verdict": judged["verdict"], "cells": ", ".join(cells), "n_images": n_images, "n_seeds": len(seeds),
            "note": "; ".join(notes), "rules_version": "v2", "registration": REGISTRATION.get(claim.id, REGISTERED_V2),
            "image_part": image_part, "seeds": ", ".join(str(s) for s in seeds),
            "control": NEEDS_CONTROL.get(claim.id, ""), "control_value": math.nan,
            "verdict_unadjusted": judged["verdict"], "p_value": judged["p_value"], "holds_familywise": False}
