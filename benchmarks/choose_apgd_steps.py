#!/usr/bin/env python
"""Choose `eval.apgd_steps` by the rule registered in docs/claims-v2.md ("Evaluation attack choice"), from the
raw rows of `benchmarks/eval_strength.py --images tuning --apgd-steps K --out FILE` runs:

    python benchmarks/choose_apgd_steps.py --reference rows_100.json --candidates rows_10.json rows_25.json ...

The reference is PGD + APGD-CE-100 + APGD-DLR-100 on the survivors; a candidate (`apgd_steps` K) qualifies when on
every key cell measured by both its robust accuracy (after all three stages) is within `--tolerance` (0.01) of the
reference's and no fraction of G (the cell between the conventional (0) and adversarial (1) pretrained net of its
seed, each under the same attack) differs from the reference's by more than `--g-tolerance` (0.02). The choice is
the qualifying candidate with the fewest steps (else the reference's 100). Prints a markdown table (robust accuracy
per cell and attack, seconds per cell) and the choice. Torch-free.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

CELL_NAMES = {"pretrained": "pretrained", "m100000": "before 1", "m110000": "before 2", "m111000": "before 3",
              "m011111": "after 1", "m001111": "after 2", "m111111": "before 6 (control)"}


def _final(row: dict) -> float:
    return row[row["attacks"][-1]]


def _key(row: dict) -> tuple:
    return row["seed"], row["pretraining"], row["cell"]


def fractions_of_g(rows: list[dict]) -> dict:
    """{(seed, pretraining, cell): fraction of G under the rows' attack}; NaN where G <= 0 or a pretrained net is
    missing."""
    by_key = {_key(r): _final(r) for r in rows}
    out = {}
    for r in rows:
        conv, adv = by_key.get((r["seed"], "conventional", "pretrained")), by_key.get((r["seed"], "adversarial",
                                                                                     "pretrained"))
        g = math.nan if conv is None or adv is None else adv - conv
        out[_key(r)] = (_final(r) - conv) / g if g > 0 else math.nan
    return out


def judge(reference: list[dict], candidate: list[dict], tolerance: float = 0.01, g_tolerance: float = 0.02) -> dict:
    """{"cells": cells compared, "max_acc_diff", "max_g_diff", "qualifies"} of one candidate against the reference,
    on the cells both measured."""
    ref, cand = {_key(r): r for r in reference}, {_key(r): r for r in candidate}
    keys = [k for k in ref if k in cand]
    if not keys:
        raise ValueError("the candidate and the reference share no (seed, pretraining, cell)")
    acc = max(abs(_final(cand[k]) - _final(ref[k])) for k in keys)
    fr, fc = fractions_of_g(reference), fractions_of_g(candidate)
    g_diffs = [abs(fc[k] - fr[k]) for k in keys if not (math.isnan(fc[k]) or math.isnan(fr[k]))]
    g = max(g_diffs, default=math.nan)
    return {"cells": len(keys), "max_acc_diff": acc, "max_g_diff": g,
            "qualifies": acc <= tolerance + 1e-12 and (not g_diffs or g <= g_tolerance + 1e-12)}


def choose(reference: list[dict], candidates: dict, **tolerances) -> tuple[int, dict]:
    """(chosen apgd_steps, {steps: judge(...)}) for candidates {steps: rows}; 100 if none qualifies."""
    verdicts = {k: judge(reference, rows, **tolerances) for k, rows in sorted(candidates.items())}
    return next((k for k, v in verdicts.items() if v["qualifies"]), 100), verdicts


def table(reference: list[dict], candidates: dict, verdicts: dict) -> str:
    steps = sorted(candidates)
    head = ("| seed | net | cell | clean | " + " | ".join(reference[0]["attacks"][:1]) + " | "
            + " | ".join(f"apgd_steps {k}" for k in steps) + " | reference (100) | seconds: "
            + " / ".join(str(k) for k in [*steps, 100]) + " |")
    lines = [head, "|" + "---|" * 3 + "---:|" * (4 + len(steps))]
    cand = {k: {_key(r): r for r in rows} for k, rows in candidates.items()}
    for r in reference:
        found = [cand[k].get(_key(r)) for k in steps]
        accs = " | ".join(f"{_final(c):.3f}" if c else "" for c in found)
        secs = " / ".join(f"{c['seconds']:.0f}" if c else "-" for c in [*found, r])
        lines.append(f"| {r['seed']} | {r['pretraining']} | {CELL_NAMES.get(r['cell'], r['cell'])} | {r['clean']:.3f} | "
                     f"{r[r['attacks'][0]]:.3f} | {accs} | {_final(r):.3f} | {secs} |")
    lines.append("")
    for k in steps:
        v = verdicts[k]
        lines.append(f"apgd_steps {k}: {v['cells']} cells, largest |robust accuracy - reference| "
                     f"{v['max_acc_diff']:.3f}, largest |fraction of G - reference| {v['max_g_diff']:.3f}: "
                     + ("qualifies" if v["qualifies"] else "does not qualify"))
    return "\n".join(lines)


def read_rows(path) -> list[dict]:
    """Rows of an eval_strength `--out` file (a JSON list) or of its printed log (one JSON object a line: the
    rows of a run stopped early)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="eval_strength rows (--out file or log) with --apgd-steps 100")
    p.add_argument("--candidates", nargs="+", required=True, help="eval_strength rows, one file per apgd_steps")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--g-tolerance", type=float, default=0.02)
    args = p.parse_args(argv)
    reference = read_rows(args.reference)
    candidates = {}
    for path in args.candidates:
        rows = read_rows(path)
        if rows:
            candidates[rows[0]["apgd_steps"]] = rows
    chosen, verdicts = choose(reference, candidates, tolerance=args.tolerance, g_tolerance=args.g_tolerance)
    print(table(reference, candidates, verdicts))
    print(f"\nchosen: apgd_steps {chosen}")


if __name__ == "__main__":
    main()
