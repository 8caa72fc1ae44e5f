"""The checkers of the claims v2 on the retrained nets (C0-C6 and the retraining controls A, B), from a run's
tables and per-sample outcomes (rules: `report.claim_rules_v2`; reinit and features: `claim_checks_v2_analyses`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..grid.vocabulary import all_modules_cell, is_module_cell, known_archs
from ..stats import bootstrap_replicates
from .claim_checks import PRE, Outcomes, _gap
from .claim_rules import N_BOOT, _ratio
from .claim_rules_v2 import BY_ID, CONTROL_CELL, CONTROLS, Claim, claim_for, module_groups, module_note, row, span
from .claim_verdicts import judge


@dataclass
class Setting:
    """One (dataset, arch, attack) of the outcomes: its nets' outcomes, the row labels and the image part."""

    outcomes: Outcomes
    labels: tuple
    image_part: str

    def test(self, claim: Claim, needed: dict[str, tuple[str, str, str]], statistic: Callable[[dict], object],
             note: str = "") -> dict:
        """Bootstrap `statistic` (a float or the comparisons of an intersection-union test) over `needed`
        ({name: (pretraining, cell, metric)}); not run when a net is missing."""
        missing = sorted({f"{p}/{c}" for p, c, _ in needed.values() if not self.outcomes.has(p, c)})
        if missing:
            return self.skip(claim, f"missing evaluations: {', '.join(missing)}")
        arrays = {name: self.outcomes.array(*key) for name, key in needed.items()}
        estimates, replicates = bootstrap_replicates(arrays, statistic, n_boot=N_BOOT, seed=0)
        return row(claim, self.labels, judged=judge(claim, estimates, replicates),
                   cells=sorted({f"{p}/{c}" for p, c, _ in needed.values()}), n_images=len(self.outcomes.images),
                   seeds=self.outcomes.seeds, image_part=self.image_part, note=note)

    def skip(self, claim: Claim, note: str) -> dict:
        return row(claim, self.labels, status="not run", image_part=self.image_part, note=note)


def control_cell(arch: str, cells=()) -> str:
    """The cell of the retraining controls: every module of `arch` retrained, cut-off 'before N' (`m111111` for
    the six modules of the paper's archs). An arch the vocabulary does not know (tables read without their config)
    takes N from its module cells in `cells`."""
    if arch in known_archs():
        return all_modules_cell(arch)
    sizes = {len(c) - 1 for c in cells if isinstance(c, str) and is_module_cell(c)}
    return "m" + "1" * sizes.pop() if len(sizes) == 1 else CONTROL_CELL


def control_rows(s: Setting) -> list[dict]:
    """Retraining controls A and B on the all-modules cell (`m111111`, before 6, for a six-module arch) of each
    pretrained net."""
    cell = control_cell(s.labels[1], s.outcomes.table["cell"].unique() if "cell" in s.outcomes.table else ())
    a = {**PRE, "x": ("conventional", cell, "robust")}
    b = {**PRE, "x": ("adversarial", cell, "robust")}
    return [s.test(CONTROLS["A"], a, lambda v: _ratio(v["x"] - v["conv_robust"], _gap(v))),
            s.test(CONTROLS["B"], b, lambda v: _ratio(v["adv_robust"] - v["x"], _gap(v)))]


def cutoff_rows(cutoff: pd.DataFrame, s: Setting) -> list[dict]:
    """C0-C4 (C1b two-sided)."""
    coords = cutoff[(cutoff["dataset"] == s.labels[0]) & (cutoff["arch"] == s.labels[1])]

    def cell(pretraining, direction, c):
        hit = coords[(coords["pretraining"] == pretraining) & (coords["direction"] == direction) & (coords["cutoff"] == c)]
        return hit["cell"].iloc[0]

    def cutoffs(direction):
        return sorted(int(c) for c in coords.loc[coords["direction"] == direction, "cutoff"].dropna().unique())

    before, after = cutoffs("before"), cutoffs("after")
    rows = [s.test(BY_ID["C0"], PRE, _gap)]
    c3 = max([c for c in before if 1 <= c <= 3], default=None)
    cmax = max([c for c in before if c > 3], default=None)
    c2 = min([c for c in after if c >= 2], default=None)
    if c3 is None:
        rows.append(s.skip(BY_ID["C1a"], "no before-cut-off in 1..3"))
    else:
        rows.append(s.test(BY_ID["C1a"], {**PRE, "x": ("conventional", cell("conventional", "before", c3), "robust")},
                           lambda a: _ratio(a["x"] - a["conv_robust"], _gap(a)), note=f"c3 = {c3}"))
    if c3 is None or cmax is None:
        rows.append(s.skip(BY_ID["C1b"], "needs before-cut-offs <= 3 and > 3"))
    else:
        rows.append(s.test(BY_ID["C1b"], {
            **PRE, "x3": ("conventional", cell("conventional", "before", c3), "robust"),
            "xmax": ("conventional", cell("conventional", "before", cmax), "robust")},
            lambda a: _ratio(a["xmax"] - a["x3"], _gap(a)), note=f"c3 = {c3}, cmax = {cmax}"))
    for claim, pretraining in (("C2", "conventional"), ("C4", "adversarial")):
        if c2 is None:
            rows.append(s.skip(BY_ID[claim], "no after-cut-off >= 2"))
            continue
        rows.append(s.test(BY_ID[claim], {**PRE, "x": (pretraining, cell(pretraining, "after", c2), "robust")},
                           lambda a: _ratio(a["x"] - a["conv_robust"], _gap(a)), note=f"c2 = {c2}"))
    if 2 not in before:
        return rows + [s.skip(BY_ID[c], "no before-cut-off 2") for c in ("C3a", "C3b")]
    b2 = cell("adversarial", "before", 2)
    rows.append(s.test(BY_ID["C3a"], {**PRE, "x": ("adversarial", b2, "robust")},
                       lambda a: _ratio(a["adv_robust"] - a["x"], _gap(a))))
    rows.append(s.test(BY_ID["C3b"], {"adv_clean": ("adversarial", "pretrained", "clean"),
                                      "x": ("adversarial", b2, "clean")}, lambda a: a["x"] - a["adv_clean"]))
    return rows


def layer_rows(layer: pd.DataFrame | None, s: Setting) -> list[dict]:
    """C5a (intersection-union over the later intervals) and C5b (two-sided)."""
    if layer is None:
        return [s.skip(BY_ID[c], "no layer_cutoff analysis") for c in ("C5a", "C5b")]
    coords = layer[(layer["dataset"] == s.labels[0]) & (layer["arch"] == s.labels[1]) &
                   (layer["pretraining"] == "conventional") & (layer["direction"] == "before")]
    if coords.empty:
        return [s.skip(BY_ID[c], "no conventional -> adversarial layer cut-offs") for c in ("C5a", "C5b")]
    cells = coords.drop_duplicates("layer_cutoff").set_index("layer_cutoff")["cell"].to_dict()
    ks = sorted({0, *(int(k) for k in cells)})
    needed = {f"k{k}": ("conventional", "pretrained" if k == 0 else cells[k], "robust") for k in ks}
    rows = []
    later = [k for k in ks if k > 1]
    if 1 in ks and later:
        intervals = list(zip(ks[ks.index(1):], ks[ks.index(1) + 1:]))

        def first_minus_later(a):
            g1 = a["k1"] - a["k0"]
            return [g1 - (a[f"k{k}"] - a[f"k{prev}"]) / (k - prev) for prev, k in intervals]

        rows.append(s.test(BY_ID["C5a"], needed, first_minus_later,
                           note=f"intervals after k = 1: {', '.join(f'{p}-{k}' for p, k in intervals)}"))
    else:
        rows.append(s.skip(BY_ID["C5a"], "needs layer cut-off 1 and a later one"))
    if 7 in ks and ks[-1] > 7:
        rows.append(s.test(BY_ID["C5b"], {**PRE, "k7": needed["k7"], "last": needed[f"k{ks[-1]}"]},
                           lambda a: _ratio(a["last"] - a["k7"], _gap(a)), note=f"k_last = {ks[-1]}"))
    else:
        rows.append(s.skip(BY_ID["C5b"], "needs layer cut-off 7 and a larger one"))
    return rows


def subset_rows(subsets: pd.DataFrame | None, s: Setting) -> list[dict]:
    """C6a, C6b (unchanged statistics: medians over the configured subsets) on the first and second early module
    (m0, m1 of an arch with N >= 4 modules; `claim_rules_v2.module_groups`)."""
    if subsets is None:
        return [s.skip(BY_ID[c], "no module_subsets analysis") for c in ("C6a", "C6b")]
    coords = subsets[(subsets["dataset"] == s.labels[0]) & (subsets["arch"] == s.labels[1]) &
                     (subsets["pretraining"] == "conventional")].drop_duplicates("subset")
    masks = coords.set_index("subset")["cell"].to_dict()
    n = len(next(iter(masks))) if masks else None  # a mask has one character per module
    early = module_groups(n)["early"] if n else ("m0", "m1")
    rows = []
    for claim, module in (("C6a", 0), ("C6b", 1)):
        if module >= len(early):
            rows.append(s.skip(claim_for(claim, n), f"the early modules of a {n}-module arch are {span(early)}: no "
                               "second one (docs/claims-v2.md)"))
            continue
        inside = [m for m in masks if m[module] == "1"]
        outside = [m for m in masks if m[module] == "0"]
        if len(inside) < 2 or len(outside) < 2:
            rows.append(s.skip(claim_for(claim, n), f"needs >= 2 subsets with and without m{module}"))
            continue
        needed = {**PRE, **{f"s{m}": ("conventional", masks[m], "robust") for m in masks}}

        def median_gap(a, inside=inside, outside=outside):
            return _ratio(np.median([a[f"s{m}"] for m in inside]) - np.median([a[f"s{m}"] for m in outside]), _gap(a))

        note = "; ".join(filter(None, (f"{len(inside)} subsets with m{module}, {len(outside)} without", module_note(n))))
        rows.append(s.test(claim_for(claim, n), needed, median_gap, note=note))
    return rows
