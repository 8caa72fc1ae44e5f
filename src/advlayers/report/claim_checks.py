"""The checkers of the claims (`report.claim_rules` holds the rules): one per figure's claims, each from the run's
tables and per-sample outcomes, bootstrapped with `advlayers.stats.bootstrap`."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..grid import vocabulary as vocab
from ..stats import bootstrap
from .claim_rules import BY_ID, N_BOOT, Claim, _ratio, _row

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
