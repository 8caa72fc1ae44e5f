"""Verdicts of the claims v2 (docs/claims-v2.md): one-sided, two-sided plateau and intersection-union tests
from bootstrap replicates, their one-sided p-values, and the passes over a whole table: G <= 0 (`not
testable`), precondition C0, the retraining controls (`confounded`) and Holm's family-wise column."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..stats import percentile_interval
from .claim_rules import verdict as one_sided  # the verdict rule is unchanged in v2
from .claim_rules_v2 import (C0_NOT_MET, CONTROL, CONTROLS, FAMILY_ALPHA, G_NOT_POSITIVE, KIND, NEEDS_CONTROL,
                             OVER_G, Claim)




def plateau(lo: float, hi: float, small: float) -> str:
    """Two-sided: holds inside (-small, +small), fails entirely above +small or below -small."""
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if -small < lo and hi < small:
        return "holds"
    return "fails" if lo > small or hi < -small else "inconclusive"


def p_one_sided(replicates: np.ndarray, threshold: float, side: str) -> float:
    """The share of the finite replicates not on the claim's side of its threshold (1 without an interval)."""
    r = np.asarray(replicates, dtype=float)
    finite = r[np.isfinite(r)]
    if len(finite) < 0.9 * len(r) or not len(finite):
        return 1.0
    return float(np.mean(finite <= threshold) if side == ">" else np.mean(finite >= threshold))


def judge(claim: Claim, estimates, replicates) -> dict:
    """value, ci_lo, ci_hi, p_value and verdict of a claim from its estimates (k,) and replicates (B, k).

    one-sided and plateau: k = 1. Intersection-union (k comparisons): holds when every comparison's interval
    is on the claim's side, fails when some comparison's interval is entirely on the other side, else
    inconclusive; the row shows the comparison with the smallest point estimate (side '>') or the largest
    ('<'); p is the largest comparison p. Controls: judged on the point estimate against the bar."""
    estimates = np.atleast_1d(np.asarray(estimates, dtype=float))
    replicates = np.asarray(replicates, dtype=float).reshape(len(replicates), -1)
    kind = KIND.get(claim.id, "control")
    intervals = [percentile_interval(replicates[:, j]) for j in range(len(estimates))]
    if kind == "iu":
        verdicts = [one_sided(lo, hi, claim.threshold, claim.side) for lo, hi in intervals]
        verdict = ("fails" if "fails" in verdicts else
                   "holds" if all(v == "holds" for v in verdicts) else "inconclusive")
        finite = np.where(np.isfinite(estimates), estimates, np.inf if claim.side == ">" else -np.inf)
        shown = int(np.argmin(finite) if claim.side == ">" else np.argmax(finite))
        p = max(p_one_sided(replicates[:, j], claim.threshold, claim.side) for j in range(len(estimates)))
    else:
        shown = 0
        lo, hi = intervals[0]
        if kind == "plateau":
            verdict = plateau(lo, hi, claim.threshold)
            p = max(p_one_sided(replicates[:, 0], claim.threshold, "<"),
                    p_one_sided(replicates[:, 0], -claim.threshold, ">"))
        elif kind == "control":
            value = estimates[0]
            verdict = "passes" if value >= CONTROL else "below bar" if math.isfinite(value) else "not testable"
            p = math.nan
        else:
            verdict = one_sided(lo, hi, claim.threshold, claim.side)
            p = p_one_sided(replicates[:, 0], claim.threshold, claim.side)
    lo, hi = intervals[shown]
    return {"value": float(estimates[shown]), "ci_lo": lo, "ci_hi": hi, "p_value": p, "verdict": verdict}


# --------------------------------------------------------------------------- passes over the whole table


def _add_note(table: pd.DataFrame, mask, note: str) -> None:
    table.loc[mask, "note"] = [f"{n}; {note}" if n else note for n in table.loc[mask, "note"]]


def precondition(table: pd.DataFrame) -> pd.DataFrame:
    """G <= 0: the rows divided by G are `not testable` (plain-words note); C0 not holding with G > 0: the
    rows of that (dataset, arch) are noted. Per (dataset, arch) of a C0 row."""
    table = table.copy()
    for c0 in table[table["claim"] == "C0"].itertuples():
        same = ((table["dataset"] == c0.dataset) & (table["arch"] == c0.arch) & (table["claim"] != "C0") &
                ~table["verdict"].isin(["not run"]))
        if c0.verdict == "not run":
            continue
        if c0.value <= 0:
            undefined = same & table["claim"].isin(OVER_G)
            table.loc[undefined, ["value", "ci_lo", "ci_hi", "p_value"]] = math.nan
            table.loc[undefined, ["verdict", "verdict_unadjusted"]] = "not testable"
            _add_note(table, undefined, G_NOT_POSITIVE.format(g=c0.value))
            _add_note(table, same & ~undefined, C0_NOT_MET)
        elif c0.verdict != "holds":
            _add_note(table, same, C0_NOT_MET)
    return table


def confound(table: pd.DataFrame) -> pd.DataFrame:
    """Claims that need a retraining control: `confounded` when the control of their (dataset, arch) is below
    CONTROL (point estimate) or missing ("no control"); `verdict_unadjusted` keeps their own verdict."""
    table = table.copy()
    controls = {(r.dataset, r.arch, r.claim): r for r in table[table["claim"].isin(list(CONTROLS))].itertuples()}
    for i, r in table.iterrows():
        name = NEEDS_CONTROL.get(r["claim"])
        if name is None or r["verdict"] in ("not run", "not testable"):
            continue
        control = controls.get((r["dataset"], r["arch"], name))
        if control is None or control.verdict in ("not run", "not testable") or not math.isfinite(control.value):
            why = "not run" if control is None else control.verdict
            table.loc[i, "verdict"] = "confounded"
            table.loc[i, "note"] = "; ".join(n for n in (r["note"], f"no control (control {name} {why})") if n)
            continue
        table.loc[i, "control_value"] = control.value
        if control.value < CONTROL:
            table.loc[i, "verdict"] = "confounded"
            table.loc[i, "note"] = "; ".join(n for n in (r["note"], f"control {name} = {control.value:.3f} < "
                                                         f"{CONTROL:g}: the retraining budget may be too short") if n)
    return table


def holm(table: pd.DataFrame, alpha: float = FAMILY_ALPHA) -> pd.DataFrame:
    """`holds_familywise`: Holm's step-down over the claims with an interval (not: not run, not testable,
    controls) at a one-sided `alpha`; a row holds family-wise when Holm rejects its null and it holds."""
    table = table.copy()
    family = table[~table["verdict_unadjusted"].isin(["not run", "not testable"]) &
                   ~table["claim"].isin(list(CONTROLS))]
    order = family["p_value"].fillna(1.0).sort_values(kind="stable")
    m = len(order)
    rejected = set()
    for rank, (index, p) in enumerate(order.items()):
        if p > alpha / (m - rank):
            break
        rejected.add(index)
    table["holds_familywise"] = [i in rejected and v == "holds" for i, v in zip(table.index, table["verdict"])]
    return table


def summary(table: pd.DataFrame) -> str:
    """'N holds, N fails, N inconclusive, N confounded, N not testable, N not run; K hold family-wise'."""
    claims = table[~table["claim"].isin(list(CONTROLS))]
    counts = claims["verdict"].value_counts()
    verdicts = ("holds", "fails", "inconclusive", "confounded", "not testable", "not run")
    return (", ".join(f"{counts.get(v, 0)} {v}" for v in verdicts) +
            f"; {int(claims['holds_familywise'].sum())} hold family-wise")
