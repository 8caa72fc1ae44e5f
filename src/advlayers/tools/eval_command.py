"""`advlayers eval`: clean and robust accuracy of a checkpoint (PGD, APGD or AutoAttack), printed and as JSON.

    advlayers eval CKPT --data digits --eps 8/255 --steps 200          L-inf PGD-200
    advlayers eval CKPT --data digits --eps 8/255 --autoattack         standard AutoAttack (reference implementation)
    advlayers eval CKPT --data digits --eps 0.5 --norm L2 --apgd ce     APGD-CE in the L2 threat model
    advlayers eval CKPT --data mnist5k --eps 0.15 --steps 10 --apgd ensemble   the workflow's eval.attack apgd

AutoAttack and APGD print one progress line per attack and batch while they run (to stderr) and, after the
accuracies, the robust accuracy after each attack and the reference implementation's check messages.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from ..grid import vocabulary as vocab
from .cli_args import UsageError, _device, _fmt_fraction, _non_negative_int, _positive_int, fraction

NORMS = ("Linf", "L2")
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="clean and robust accuracy of a checkpoint",
                       usage="advlayers eval CKPT --data PATH_OR_NAME --eps 8/255 [options]",
                       description="Clean and robust accuracy (95% Wilson intervals) of a checkpoint on test "
                       "images: PGD (default, L-inf), APGD or AutoAttack (Croce & Hein's reference "
                       "implementation, L-inf or L2) on the true label.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True, metavar="D", help="prepared dataset file, or a name (digits, ...)")
    p.add_argument("--root", metavar="DIR", help="dataset folder, with a name")
    p.add_argument("--eps", type=fraction, required=True, metavar="E",
                   help="radius in [0,1] pixel units: L-inf e.g. 8/255, L2 e.g. 0.5")
    p.add_argument("--norm", choices=NORMS, default="Linf",
                   help="threat model (Linf); L2 with --autoattack or --apgd")
    # at least 1: with 0 steps the "robust accuracy" is the accuracy on randomly perturbed images, not an attack's
    p.add_argument("--steps", type=_positive_int, default=200, metavar="K", help="attack steps (200; at least 1)")
    p.add_argument("--step-size", type=fraction, metavar="S", help="PGD step (default: eps/4)")
    p.add_argument("--restarts", type=_positive_int, default=1, metavar="R", help="restarts (1)")
    p.add_argument("--n", type=_positive_int, default=1000, help="test images, a seeded subset (1000)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=_positive_int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=_positive_int, help=argparse.SUPPRESS)
    p.add_argument("--autoattack", nargs="?", const="standard", choices=AUTOATTACK_VERSIONS, metavar="V",
                   help="AutoAttack instead of PGD: standard (default), plus or rand")
    p.add_argument("--apgd", choices=("ce", "dlr", "ensemble"), metavar="LOSS",
                   help="APGD (ce or dlr) instead of PGD; ensemble: the workflow's eval.attack apgd, PGD (--steps, "
                        "--step-size) then APGD-CE and APGD-DLR (--apgd-steps each) on the images it left unbroken")
    p.add_argument("--apgd-steps", type=_positive_int, default=100, metavar="K",
                   help="iterations of each APGD stage of --apgd ensemble (100)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--json", metavar="OUT", help="also write the record as JSON")
    p.set_defaults(run=run)


def _load_data(data: str, root: str | None):
    from ..core.datasets import load_dataset, load_prepared

    if Path(data).is_file():
        return load_prepared(data)
    if data in vocab.DATASETS:
        return load_dataset(data, root)
    raise FileNotFoundError(f"--data {data!r} is neither a prepared dataset file nor a dataset name "
                            f"({', '.join(vocab.DATASETS)})")


def attack_spec(args):
    """The attack of the command line; a bad combination is a UsageError, a bad value a ValueError."""
    if args.autoattack and args.apgd:
        raise UsageError("--autoattack and --apgd exclude each other")
    if args.autoattack:
        from ..core.autoattack import AutoAttackSpec

        return AutoAttackSpec(args.eps, version=args.autoattack, norm=args.norm)
    if args.apgd == "ensemble":
        if args.norm != "Linf":
            raise UsageError(f"--apgd ensemble starts with L-inf PGD; --norm {args.norm} needs --apgd ce|dlr")
        from ..core.attacks import AttackSpec
        from ..core.ensemble import APGDEnsembleSpec

        step_size = args.eps / 4 if args.step_size is None else args.step_size
        pgd = AttackSpec(args.eps, step_size, args.steps, random_start=True, restarts=args.restarts)
        return APGDEnsembleSpec(pgd, apgd_steps=args.apgd_steps, seed=args.seed)
    if args.apgd:
        from ..core.autoattack import APGDSpec

        return APGDSpec(args.eps, steps=args.steps, loss=args.apgd, restarts=args.restarts, norm=args.norm)
    if args.norm != "Linf":
        raise UsageError(f"--norm {args.norm} needs --autoattack or --apgd: PGD here is L-inf only")
    from ..core.attacks import AttackSpec

    step_size = args.eps / 4 if args.step_size is None else args.step_size
    return AttackSpec(args.eps, step_size, args.steps, random_start=True, restarts=args.restarts)


def describe(path, payload: dict) -> str:
    """What the checkpoint is: trained (on what, how long) or the untrained initial weights of a run."""
    meta = payload.get("meta", {})
    net = f"{payload['arch']} (width {payload.get('width', 1.0):g})"
    how = f"pretraining {meta.get('pretraining', '?')}, retraining {meta.get('retraining', '?')}"
    if payload.get("epoch", 0) == 0:
        return (f"{path}: {net}, untrained: the initial weights (epoch 0) of a run on {payload['dataset']}, "
                f"{how}, seed {payload.get('seed', '?')}")
    epochs = payload["epoch"]
    return f"{path}: {net} trained on {payload['dataset']} for {epochs} epoch{'s' * (epochs != 1)}, {how}"


class _Progress(logging.Handler):
    """The attacks' per-attack progress lines, to stderr while they run."""

    def emit(self, record):
        print(f"  {record.getMessage()}", file=sys.stderr, flush=True)


def _evaluate(args, spec, model, dataset, payload) -> tuple[dict, list]:
    from ..core.evaluation import evaluate

    progress = logging.getLogger("advlayers.core.autoattack")
    handler, level = _Progress(), progress.level
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = evaluate(model, dataset.test, spec, n=args.n, seed=args.seed, batch_size=args.batch_size,
                              device=args.device, progress=False, checkpoint=str(args.checkpoint),
                              arch=payload["arch"], dataset=dataset.info.name, trained_on=payload["dataset"])
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
    return record, caught


def _print_record(args, spec, record, dataset) -> None:
    settings = f"eps {_fmt_fraction(spec.eps)}" + ("" if args.norm == "Linf" else f" ({args.norm})")
    if args.apgd == "ensemble":
        settings += f", PGD {spec.pgd.steps} steps of {_fmt_fraction(spec.pgd.step_size)}, APGD {spec.apgd_steps} steps"
    elif not args.autoattack:
        settings += f", {spec.steps} steps"
        if not args.apgd:
            settings += f" of {_fmt_fraction(spec.step_size)}"
        settings += f", {spec.restarts} restart{'s' * (spec.restarts > 1)}"
    print(f"{record['attack']} ({settings}) on {record['n_eval']} test images of {dataset.info.name} "
          f"(seed {args.seed}), {record['seconds']:.1f} s")
    for what in ("clean", "robust"):
        acc, lo, hi = record[f"{what}_acc"], record[f"{what}_acc_lo"], record[f"{what}_acc_hi"]
        print(f"  {what + ' accuracy':16s} {100 * acc:6.2f}%   95% Wilson interval [{100 * lo:.2f}, {100 * hi:.2f}]%")
    after = record.get("robust_acc_after", {})
    if len(after) > 1:
        print("  robust accuracy after each attack (each runs on the images the ones before left unbroken):")
        for attack, acc in after.items():
            print(f"    {attack:10s} {100 * acc:6.2f}%")


def run(args) -> int:
    spec = attack_spec(args)  # settings first: a bad eps fails before anything is loaded
    import torch

    from ..core.checkpoints import load_checkpoint
    from ..io import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = _device(args.device)
    model, payload = load_checkpoint(args.checkpoint, device=args.device)
    dataset = _load_data(args.data, args.root)
    for key, what in (("num_classes", "classes"), ("image_size", "px images")):
        if payload[key] != getattr(dataset.info, key):
            raise ValueError(f"checkpoint {args.checkpoint} has {payload[key]} {what}, dataset "
                             f"{dataset.info.name} has {getattr(dataset.info, key)}")
    if payload["dataset"] != dataset.info.name:  # allowed (transfer), but never unnoticed
        print(f"advlayers: warning: {args.checkpoint} was trained on {payload['dataset']}, evaluated on "
              f"{dataset.info.name}", file=sys.stderr)
    if args.autoattack or args.apgd:
        print(f"{spec.name} on {args.n} test images: progress per attack and batch follows", file=sys.stderr,
              flush=True)
    record, caught = _evaluate(args, spec, model, dataset, payload)
    print(describe(args.checkpoint, payload))
    _print_record(args, spec, record, dataset)
    for w in caught:
        print(f"advlayers: warning: {w.message}", file=sys.stderr)
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0
