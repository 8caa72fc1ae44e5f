"""The checkers of the claims v2 on the analyses without retraining: C7 (layer re-initialisation: C7a minimum
effect on layers that keep the net working, C7b intersection-union, C7d relative drops) and C8 (feature
distributions: seeds resampled, C8c intersection-union). Rules: `report.claim_rules_v2`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..grid import vocabulary as vocab
from ..stats import bootstrap_replicates
from .claim_checks import _reinit_arrays
from .claim_rules import N_BOOT, _ratio
from .claim_rules_v2 import BY_ID, CLEAN_KEPT, claim_for, module_count, module_groups, module_note, row, span
from .claim_verdicts import judge

C7, C8 = ("C7a", "C7b", "C7c", "C7d"), ("C8a", "C8b", "C8c")


def image_part(table: pd.DataFrame) -> str:
    """The image part a table's rows were evaluated on ('unrecorded' for tables made before it was recorded);
    a table mixing parts is an error."""
    if "image_part" not in table:
        return "unrecorded"
    parts = sorted(str(p) for p in table["image_part"].dropna().unique())
    if len(parts) > 1:
        raise ValueError(f"claims: the evaluations mix image parts ({', '.join(parts)}); evaluate every net on one "
                         "part (config eval.images: confirmation | tuning)")
    return parts[0] if parts else "unrecorded"


def reinit_rows(reinit: pd.DataFrame | None) -> list[dict]:
    if reinit is None or reinit.empty:
        return [row(BY_ID[c], status="not run", note="no reinit analysis") for c in C7]
    rows = []
    for (dataset, arch, policy), part in reinit.groupby(["dataset", "arch", "bn_policy"]):
        labels = (dataset, arch, f"bn_policy={policy}", part["attack"].iloc[0])
        common = {"image_part": image_part(part), "seeds": sorted(int(s) for s in part["seed"].unique())}
        nets = {p: part[part["pretraining"] == p] for p in vocab.PRETRAININGS}
        if any(n.empty for n in nets.values()):
            rows += [row(BY_ID[c], labels, status="not run", note="needs both pretrained nets", **common) for c in C7]
            continue
        rows += _reinit_policy(nets, labels, common)
    return rows


def _reinit_policy(nets: dict, labels: tuple, common: dict) -> list[dict]:
    arrays, layers = {}, {}
    for p, net in nets.items():
        for metric in ("clean", "robust"):
            for (index, operation), a in _reinit_arrays(net, metric).items():
                if operation in ("none", "rewind"):
                    arrays[f"{p}/{index}/{metric}"] = a
        rewound = net[net["operation"] == "rewind"].drop_duplicates("layer_index")
        layers[p] = [(int(i), m) for i, m in rewound[["layer_index", "module"]].itertuples(index=False)]
    # layers whose rewind keeps the net working (clean >= 0.5), fixed from the point estimates
    kept = {p: [i for i, _ in layers[p] if arrays[f"{p}/{i}/clean"].mean() >= CLEAN_KEPT] for p in layers}
    # the early and late modules of the arch's N (m0-m1 and m3-m5 for six: claim_rules_v2.module_groups)
    n = module_count(labels[1], [m for p in layers for _, m in layers[p]])
    groups = module_groups(n)
    early_kept = [i for i, m in layers["conventional"] if m in groups["early"] and i in kept["conventional"]]
    early = [i for i, m in layers["adversarial"] if m in groups["early"]]
    late = [i for i, m in layers["adversarial"] if m in groups["late"]]
    everything = [i for i, _ in layers["adversarial"]]
    pairs = [(p, i) for p in vocab.PRETRAININGS for i in kept[p]]
    n_images = next(iter(arrays.values())).shape[1]

    def run(claim, statistic, note=""):
        estimates, replicates = bootstrap_replicates(arrays, statistic, n_boot=N_BOOT, seed=0)
        if claim in ("C7a", "C7c"):
            note = "; ".join(filter(None, (note, module_note(n))))
        return row(claim_for(claim, n), labels, judged=judge(BY_ID[claim], estimates, replicates),
                   cells=["rewind, every layer", "original"], n_images=n_images, note=note, **common)

    def susc(a, p, i):
        return 1 - a[f"{p}/{i}/robust"] / a[f"{p}/{i}/clean"] if a[f"{p}/{i}/clean"] > 0 else math.nan

    rows = []
    if early_kept:
        rows.append(run("C7a", lambda a: np.mean([a[f"conventional/{i}/robust"] - a["conventional/-1/robust"]
                                                  for i in early_kept]),
                        note=f"{len(early_kept)} {span(groups['early'])} layers keep clean >= {CLEAN_KEPT:g}"))
    else:
        rows.append(row(claim_for("C7a", n), labels, status="not run", note=f"no {span(groups['early'])} layer of "
                        f"the conventional net keeps clean >= {CLEAN_KEPT:g} when rewound", **common))
    if pairs:
        rows.append(run("C7b", lambda a: [susc(a, p, i) - susc(a, p, -1) for p, i in pairs],
                        note=f"{len(pairs)} (net, layer) pairs keep clean >= {CLEAN_KEPT:g}"))
    else:
        rows.append(row(BY_ID["C7b"], labels, status="not run", note="no rewound layer keeps clean >= "
                        f"{CLEAN_KEPT:g}", **common))
    rows.append(run("C7c", lambda a: _ratio(
        np.mean([a["adversarial/-1/robust"] - a[f"adversarial/{i}/robust"] for i in early])
        - np.mean([a["adversarial/-1/robust"] - a[f"adversarial/{i}/robust"] for i in late]),
        a["adversarial/-1/robust"])))

    def relative_drops(a):
        clean0, rob0 = a["adversarial/-1/clean"], a["adversarial/-1/robust"]
        if clean0 <= 0 or rob0 <= 0:
            return math.nan
        return np.mean([(clean0 - a[f"adversarial/{i}/clean"]) / clean0 - (rob0 - a[f"adversarial/{i}/robust"]) / rob0
                        for i in everything])

    rows.append(run("C7d", relative_drops))
    return rows


def feature_rows(divergence: pd.DataFrame | None) -> list[dict]:
    if divergence is None or divergence.empty:
        return [row(BY_ID[c], status="not run", note="no features analysis") for c in C8]
    rows = []
    for (dataset, arch), part in divergence.groupby(["dataset", "arch"]):
        rows += _feature_setting(part, (dataset, arch, "", "detector AUROC"))
    return rows


def _feature_setting(part: pd.DataFrame, labels: tuple) -> list[dict]:
    seeds = sorted(int(s) for s in part["seed"].unique())
    # (seeds, B) replicates per (net, module); replicate j shares its image draw across modules and nets
    boot = {(p, m): np.stack([np.asarray(v, float) for v in g.sort_values("seed")["detector_auroc_boot"]])
            for (p, m), g in part.groupby(["pretraining", "module"])}
    point = part.groupby(["pretraining", "module"])["detector_auroc"].mean().to_dict()
    modules = sorted({m for _, m in boot})
    n_boot = min(v.shape[1] for v in boot.values())
    # replicate j: seeds drawn with replacement (shared by every net and module), each drawn seed contributing
    # its j-th image-cluster replicate
    rng = np.random.default_rng(0)
    drawn = rng.integers(0, len(seeds), (n_boot, len(seeds))) if len(seeds) > 1 else np.zeros((n_boot, 1), int)
    resampled = {k: v[drawn, np.arange(n_boot)[:, None]].mean(axis=1) for k, v in boot.items()}
    common = {"cells": [f"{p}/{m}" for p, m in sorted(boot)], "n_images": int(part["n_test"].iloc[0]),
              "seeds": seeds, "image_part": image_part(part)}

    def test(claim, f, note=""):
        estimates = np.atleast_1d(np.asarray(f(point), dtype=float))
        replicates = np.array([f({k: v[j] for k, v in resampled.items()}) for j in range(n_boot)], dtype=float)
        return row(claim_for(claim, n), labels, judged=judge(BY_ID[claim], estimates, replicates), note=note,
                   **common)

    def skip(claim, note):
        return row(claim_for(claim, n), labels, status="not run", note=note, image_part=common["image_part"],
                   seeds=seeds)

    n = module_count(labels[1])
    rows = _c8a_c8b(n, labels[1], boot, modules, test, skip)
    if all(("adversarial", m) in boot and ("conventional", m) in boot for m in modules):
        rows.append(test("C8c", lambda a: [a[("adversarial", m)] - a[("conventional", m)] for m in modules]))
    else:
        rows.append(skip("C8c", "needs both nets"))
    return rows


def _c8a_c8b(n: int | None, arch: str, boot: dict, modules: list, test, skip) -> list[dict]:
    """C8a after the last early module, C8b after the deep one (m1, m4 of six modules:
    `claim_rules_v2.module_groups`); not run when the arch's module count is unknown."""
    if n is None:
        return [skip(c, f"the module count of {arch} is unknown (its config's archs section is not loaded)")
                for c in ("C8a", "C8b")]
    first, deep = module_groups(n)["early"][-1], module_groups(n)["deep"][0]
    note = module_note(n)
    rows = [test("C8a", lambda a: a[("conventional", first)], note) if ("conventional", first) in boot
            else skip("C8a", f"module {first} not sampled")]
    if ("conventional", deep) in boot and len(modules) > 1:
        rows.append(test("C8b", lambda a: a[("conventional", deep)] - max(a[("conventional", m)] for m in modules
                                                                          if m != deep), note))
    else:
        rows.append(skip("C8b", f"needs {deep} and another module"))
    return rows
