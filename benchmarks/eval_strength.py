#!/usr/bin/env python
"""Is the demo's evaluation attack strong enough? Its robust accuracy beside APGD-CE and APGD-DLR on the key cells.

    python benchmarks/eval_strength.py --images tuning                     # choosing the attack (tuning images)
    python benchmarks/eval_strength.py --images confirmation --markdown    # the comparison for docs/results.md

Reads the checkpoints of a finished workflow run (`--workdir`, default the repository: its results/) of
`--configfile` (default config/config.yaml). For every training seed and both pretrained nets, the key cells
(the pretrained nets, before 1/2/3, after 1/2 and the retraining control m111111: the cells of C0-C4 and the
controls, docs/claims-v2.md) are evaluated on the configured test images (`eval.n` of the `--images` part, the
same images for every net) with

  * the config's PGD (PGD-`steps`, early stopping: a broken image leaves the batch),
  * then APGD-CE (`--apgd-steps`, default 100, AutoAttack's first attack) on the images that attack left unbroken,
  * then APGD-DLR (`--apgd-steps`) on the images still unbroken,

i.e. the evaluation attack `eval.attack: apgd` (`advlayers.core.ensemble.APGDEnsembleSpec`, run by
`core.evaluation.evaluate` as the evaluate job runs it) with `apgd_steps` = `--apgd-steps`,

so the columns are the robust accuracy under the demo's attack and under the growing ensemble (an image counts as
robust only if no attack so far broke it). `fraction of G` places each net between the conventional (0) and the
adversarial (1) pretrained net of its seed: the quantity the claims C1a-C4 and the controls compare with their
thresholds; `shift` is how much the ensemble moves it. The attack is strong enough when the ensemble takes at
most ~1-2 points of robust accuracy off every key cell and moves no fraction of G across a threshold.

`--beyond apgd-t,square` (AutoAttack's other attacks, Croce & Hein's reference code) goes one step further: on the
images the run's own evaluation attack (the demo's `eval.attack: apgd`) left unbroken, read from the run's
outcomes table (what its verdicts used; nothing recomputed), those attacks run, and the table shows how much
robust accuracy and fraction of G they still take: the check that a stronger attack changes no conclusion of the
chosen evaluation.

Tuning images are for choosing the attack; the confirmation comparison is run once, on the final commit's demo run,
for docs/results.md. Raw rows: benchmarks/_work/eval_strength_<images>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

KEY_CELLS = ("pretrained", "m100000", "m110000", "m111000", "m011111", "m001111", "m111111")
CELL_NAMES = {"pretrained": "pretrained", "m100000": "before 1", "m110000": "before 2", "m111000": "before 3",
              "m011111": "after 1", "m001111": "after 2", "m111111": "before 6 (control)"}


def ensemble(settings: dict, apgd_steps: int):
    """The evaluation attack `eval.attack: apgd` (`core.ensemble.APGDEnsembleSpec`) built from the config's PGD
    with `apgd_steps` steps per APGD stage."""
    from advlayers.core.evaluation import attack_from_settings

    if settings.get("attack", "pgd") == "autoattack":
        raise SystemExit("eval_strength compares a PGD evaluation with APGD; the config's eval.attack is autoattack")
    return attack_from_settings({**settings, "attack": "apgd", "apgd_steps": apgd_steps})


def robust_under_ensemble(model, part, settings: dict, attack) -> dict:
    """Robust accuracy of `model` on the `settings` images of `part` after each stage of `attack` (each stage
    only on the images every earlier one left unbroken), exactly as the evaluate job runs it. Returns
    {stage name: accuracy, "clean": accuracy, "seconds": ...}."""
    from advlayers.core.evaluation import evaluate

    record = evaluate(model, part, attack, n=settings["n"], seed=settings["seed"], batch_size=settings["batch_size"],
                      progress=False)
    return {**record["robust_acc_after"], "clean": record["clean_acc"], "seconds": record["seconds"]}


def run_outcomes(workdir) -> "pd.DataFrame":
    """The run's per-sample outcomes table (results/tables/outcomes.parquet: what its verdicts used), self-digest
    and inputs checked as every consumer checks them (paths it records are relative to the run's folder)."""
    import contextlib

    from advlayers.grid import layout
    from advlayers.io import read_table

    path = Path(workdir) / layout.table_path("outcomes")
    if not path.exists():
        raise SystemExit(f"{path} does not exist: --beyond reads the run's outcomes; run all_figures first")
    with contextlib.chdir(workdir):
        return read_table(layout.table_path("outcomes"))


def beyond_config_attack(model, part, identity: dict, cell: str, outcomes, eps: float, seed: int,
                         extra: list[str]):
    """AutoAttack's `extra` attacks (reference code, custom version, in that order) on the images the run's own
    evaluation attack left unbroken, read from its outcomes (`run_outcomes`: exactly what the verdicts used, not
    a recomputation). Returns ({stage: robust accuracy after it and every stage before, "clean", "seconds"},
    stage names)."""
    import time

    import torch

    from advlayers.core.autoattack import AutoAttackSpec

    t0 = time.perf_counter()
    mine = outcomes
    for key, value in {**identity, "cell": cell}.items():
        mine = mine[mine[key] == value]
    if mine.empty or mine["attack"].nunique() != 1:
        raise SystemExit(f"the run's outcomes have {mine['attack'].nunique()} evaluation attacks for "
                         f"{identity} {cell} (need exactly one)")
    robust = torch.from_numpy(mine["robust_correct"].to_numpy(bool).copy())
    index = torch.from_numpy(mine["test_index"].to_numpy("int64").copy())
    own, n = str(mine["attack"].iloc[0]), len(robust)
    result = {own: int(robust.sum()) / n, "clean": float(mine["clean_correct"].mean()), "n": n}
    names = [own]
    spec = AutoAttackSpec(eps, version="custom", attacks=tuple(extra), seed=seed)
    survivors = index[robust]
    if len(survivors):
        position = {int(i): k for k, i in enumerate(part.index.tolist())} if getattr(part, "index", None) is not None \
            else None
        rows = torch.tensor([position[int(i)] for i in survivors]) if position else survivors
        x, y = next(iter(part.take(rows).batches(len(rows))))  # float images in [0, 1], as the evaluator sees them
        _, after, _ = spec.robust_correct_by_attack(model, x, y)
    else:
        after = {a: torch.zeros(0, dtype=torch.bool) for a in extra}
    for a in extra:
        names.append(f"AutoAttack {a}")
        result[names[-1]] = int(after[a].sum()) / n
    result["seconds"] = time.perf_counter() - t0
    return result, names


def measure(args) -> list[dict]:
    from advlayers.core.checkpoints import load_checkpoint
    from advlayers.core.datasets import load_prepared
    from advlayers.grid import conf, layout, plan, validate
    from advlayers.jobs.evaluate import eval_images

    config = validate.load(args.configfile, roots=False)
    outcomes = run_outcomes(args.workdir) if args.beyond else None
    if outcomes is not None and set(outcomes["image_part"]) != {args.images}:
        raise SystemExit(f"--images {args.images}: the run's outcomes are of the {'/'.join(sorted(set(outcomes['image_part'])))} "
                         "images, the only ones --beyond can attack (their survivors); pass that part")
    rows = []
    for setting, cells in plan.cells(config).items():
        if args.seeds is not None and setting.seed not in args.seeds:
            continue
        settings = {**conf.eval_settings(config, setting.dataset), "images": args.images}
        settings.update({k: v for k, v in (("steps", args.pgd_steps), ("restarts", args.pgd_restarts),
                                           ("step_size", args.pgd_step_size)) if v is not None})
        data = load_prepared(Path(args.workdir) / layout.data_path(setting.dataset))
        part = eval_images(data, settings)
        attack = None if args.beyond else ensemble(settings, args.apgd_steps)
        for cell in (c for c in (args.cells or KEY_CELLS) if c == "pretrained" or c in cells):
            path = Path(args.workdir) / plan.net_path(config, setting, cell)
            model, _ = load_checkpoint(path, expect={**setting.identity(), "cell": cell})
            if args.beyond:
                result, names = beyond_config_attack(model.eval(), part, setting.identity(), cell, outcomes,
                                                     settings["eps"], settings["seed"], args.beyond)
            else:
                result = robust_under_ensemble(model.eval(), part, settings, attack)
                names = [a.name for a in attack.stages]
            rows.append({**setting.identity(), "cell": cell, "images": args.images,
                         "n": settings["n"] or len(part), "attacks": names,
                         "apgd_steps": None if args.beyond else args.apgd_steps, **result})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """One row per (seed, pretraining, cell): clean, robust under each attack (cumulative), the drop, and the
    fraction of G under the first attack and under the whole ensemble."""
    if not rows:
        return "(no rows)"
    names = rows[0]["attacks"]
    pre = {(r["seed"], r["pretraining"]): r for r in rows if r["cell"] == "pretrained"}
    head = (f"| seed | net | cell | clean | {names[0]} | " + "".join(f"+ {n} | " for n in names[1:])
            + f"drop (points) | fraction of G ({names[0]}) | fraction of G (all) | shift |")
    lines = [head, "|" + "---|" * 3 + "---:|" * (5 + len(names))]
    for r in rows:
        conv, adv = pre.get((r["seed"], "conventional")), pre.get((r["seed"], "adversarial"))
        frac = ["", ""]
        if conv and adv:
            for i, name in enumerate((names[0], names[-1])):
                g = adv[name] - conv[name]
                frac[i] = (r[name] - conv[name]) / g if g > 0 else float("nan")
        shift = f"{frac[1] - frac[0]:+.2f}" if frac[0] != "" else ""
        lines.append(f"| {r['seed']} | {r['pretraining']} | {CELL_NAMES[r['cell']]} | {r['clean']:.3f} | "
                     + "".join(f"{r[n]:.3f} | " for n in names)
                     + f"{100 * (r[names[0]] - r[names[-1]]):.1f} | "
                     + (f"{frac[0]:.2f} | {frac[1]:.2f} | {shift} |" if frac[0] != "" else " |  |  |"))
    worst = max(rows, key=lambda r: r[names[0]] - r[names[-1]])
    lines += ["", f"{len(rows)} nets, {rows[0]['n']} {rows[0]['images']} images each; largest drop "
              f"{100 * (worst[names[0]] - worst[names[-1]]):.1f} points ({worst['pretraining']} net, seed {worst['seed']}, "
              f"{CELL_NAMES[worst['cell']]})."]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, choices=["tuning", "confirmation"],
                   help="the test-image part (tuning: to choose the attack; confirmation: for docs/results.md)")
    p.add_argument("--configfile", default=str(HERE.parent / "config" / "config.yaml"))
    p.add_argument("--workdir", default=str(HERE.parent), help="the folder the workflow ran in (holds results/)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--pgd-steps", type=int, default=None, help="instead of the config's eval.steps (a candidate)")
    p.add_argument("--pgd-restarts", type=int, default=None, help="instead of the config's eval.restarts")
    p.add_argument("--pgd-step-size", type=float, default=None, help="instead of the config's eval.step_size")
    p.add_argument("--beyond", type=lambda s: [a for a in s.split(",") if a], default=None,
                   help="AutoAttack attacks (e.g. apgd-t,square) run after the config's own evaluation attack, on "
                        "its survivors (instead of the PGD/APGD ensemble of --apgd-steps)")
    p.add_argument("--cells", type=lambda s: [c for c in s.split(",") if c], default=None,
                   help=f"a subset of the key cells, e.g. pretrained,m111111 (default all: {','.join(KEY_CELLS)})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="raw rows (default benchmarks/_work/eval_strength_<images>.json)")
    p.add_argument("--markdown", action="store_true", help="print the markdown table")
    args = p.parse_args(argv)
    ignored = [f"--{k.replace('_', '-')}" for k in ("pgd_steps", "pgd_restarts", "pgd_step_size", "apgd_steps")
               if getattr(args, k) != p.get_default(k)]
    if args.beyond and ignored:  # the survivors come from the run's own evaluation: its attack is fixed
        raise SystemExit(f"{', '.join(ignored)}: not used with --beyond (it attacks the survivors of the run's own "
                         "evaluation, read from its outcomes); leave them out")
    unknown = sorted(set(args.cells or ()) - set(KEY_CELLS))
    if unknown:
        raise SystemExit(f"--cells {unknown}: not key cells; valid: {', '.join(KEY_CELLS)}")
    import torch

    torch.set_num_threads(args.threads)
    rows = measure(args)
    out = Path(args.out or HERE / "_work" / f"eval_strength_{args.images}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(markdown(rows) if args.markdown else f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
