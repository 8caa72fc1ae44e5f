#!/usr/bin/env python
"""The eps ablation's figure: each claim's statistic with its 95% interval and verdict at two attack radii.

    python benchmarks/ablation_eps.py --run 0.15=/path/to/demo/run --run 0.1=/path/to/eps0.1/run \
        --out docs/img/ablation_eps.png [--markdown]

Each `--run EPS=FOLDER` is a finished `all_figures` run (its results/tables/claims.parquet, read with its
self-digest and inputs checked); the demo (config/config.yaml) is the eps 0.15 point, config/ablation_eps.yaml
the eps 0.1 point. The figure shows the claims whose statistic is a retraining effect (C1a, C1b, C2, C3a, C4,
C5a, C5b, C6a, C6b and the controls A, B): one panel per claim, a point with its interval per eps, the claim's
threshold as a line, the verdict as the point's label. docs/claims-v2.md ("C5a") asks for this: how C2 and C5a
depend on eps is reported here, not tuned in the demo. `--markdown` prints the table beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

CLAIMS = ("A", "B", "C1a", "C1b", "C2", "C3a", "C4", "C5a", "C5b", "C6a", "C6b")


def read_claims(folder: str):
    """A run's claims table (self-digest and recorded inputs checked, paths relative to the run's folder)."""
    from advlayers.grid import layout
    from advlayers.io import read_table

    if not (Path(folder) / layout.table_path("claims")).exists():
        raise SystemExit(f"{folder}: no {layout.table_path('claims')}; run `snakemake all_figures` there first")
    with contextlib.chdir(folder):
        return read_table(layout.table_path("claims"))


def rows(runs: dict) -> list[dict]:
    """One row per (claim, eps) of CLAIMS that the runs have."""
    out = []
    for eps, folder in sorted(runs.items(), key=lambda kv: float(kv[0])):
        table = read_claims(folder)
        for claim in CLAIMS:
            hit = table[table["claim"] == claim]
            if hit.empty:
                continue
            if len(hit) > 1:  # several datasets, archs or attacks: which one the ablation is about is not ours to pick
                where = sorted({f"{d}/{a}/{k}" for d, a, k in zip(hit["dataset"], hit["arch"], hit["attack"])})
                raise SystemExit(f"{folder}: {len(hit)} rows of claim {claim} ({', '.join(where)}); the ablation "
                                 "compares runs of one dataset, arch and attack (the demo's and its eps variant)")
            r = hit.iloc[0]
            out.append({"claim": claim, "eps": float(eps), "value": float(r["value"]), "lo": float(r["ci_lo"]),
                        "hi": float(r["ci_hi"]), "threshold": r["threshold"],
                        "side": str(r["side"]), "verdict": str(r["verdict"]),
                        "unadjusted": str(r["verdict_unadjusted"]), "statistic": str(r["statistic"]),
                        "familywise": bool(r["holds_familywise"]) if "holds_familywise" in r.index else False})
    return out


def figure(table: list[dict], out: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    claims = [c for c in CLAIMS if any(r["claim"] == c for r in table)]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(claims) / cols), cols, figsize=(3.2 * cols, 2.6 * math.ceil(len(claims) / cols)),
                             squeeze=False)
    for ax, claim in zip(axes.flat, claims):
        mine = [r for r in table if r["claim"] == claim]
        xs = list(range(len(mine)))
        for x, r in zip(xs, mine):  # measured points only, no line joining the two radii
            lo, hi = r["value"] - r["lo"], r["hi"] - r["value"]
            ax.errorbar([x], [r["value"]], yerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o", color="k", capsize=3)
            ax.annotate(r["verdict"], (x, r["value"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
        with contextlib.suppress(TypeError, ValueError):
            threshold = float(mine[0]["threshold"])
            # a plateau claim (side "inside ±") holds when the interval lies inside (-threshold, +threshold)
            for t in (-threshold, threshold) if mine[0]["side"].startswith("inside") else (threshold,):
                ax.axhline(t, color="tab:red", lw=0.8, ls="--")
        ax.set_xticks(xs, [f"eps {r['eps']:g}" for r in mine])
        ax.set_xlim(-0.6, len(mine) - 0.4)
        ax.set_title(claim, fontsize=9)
    for ax in list(axes.flat)[len(claims):]:
        ax.axis("off")
    fig.suptitle("eps ablation: statistic, 95% interval (seeds and images), verdict; dashed: threshold", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def markdown(table: list[dict]) -> str:
    epss = sorted({r["eps"] for r in table})
    lines = ["| claim | " + " | ".join(f"eps {e:g}" for e in epss) + " |", "|---|" + "---|" * len(epss)]
    for claim in CLAIMS:
        cells = []
        for e in epss:
            hit = [r for r in table if r["claim"] == claim and r["eps"] == e]
            cells.append("" if not hit else f"{hit[0]['value']:.2f} [{hit[0]['lo']:.2f}, {hit[0]['hi']:.2f}] "
                         f"{hit[0]['verdict']}" + (" fw" if hit[0]["familywise"] else "")
                         + (f" ({hit[0]['unadjusted']})" if hit[0]["verdict"] == "confounded" else ""))
        if any(cells):
            lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "value [95% interval] verdict; fw: holds family-wise (Holm over the run's claims)"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="EPS=FOLDER of a finished all_figures run")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "img" / "ablation_eps.png"))
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    runs = {}
    for item in args.run:
        eps, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--run {item!r}: expected EPS=FOLDER, e.g. 0.1=runs/eps0.1")
        runs[eps] = folder
    table = rows(runs)
    figure(table, Path(args.out))
    print(markdown(table) if args.markdown else f"wrote {args.out}")


if __name__ == "__main__":
    main()
