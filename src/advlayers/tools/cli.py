"""The `advlayers` command: evaluate, inspect, export and pretrain nets; the cost model; verification.

    advlayers eval CKPT --data digits --eps 8/255 --steps 200    clean and robust accuracy of a checkpoint
    advlayers layers resnet18                                   the layer table of an architecture
    advlayers export CKPT OUT                                   a torchvision state_dict of a ResNet checkpoint
    advlayers pretrain --data ... --out ...                     pretrain one net (also under torchrun: DDP)
    advlayers cost ...                                          the compute-cost model (`advlayers.tools.cost`)
    advlayers verify ...                                        checks of a results folder (`advlayers.tools.verify`)

`main(argv)` returns the exit status instead of exiting, so the workflow can run ``main(["pretrain", ...])``
in its own process; errors in the input (a missing or mismatching checkpoint, a bad value) end in one line
``advlayers: error: ...`` and status 2, never a traceback. torch is imported only by the subcommand that needs
it, so ``advlayers --help`` is instant.

Distributed pretraining (one process per GPU, DDP + SyncBatchNorm)::

    torchrun --standalone --nproc_per_node=8 -m advlayers.tools.cli pretrain --data results/data/imagenet.json \\
        --arch resnet50 --pretraining adversarial --recipe imagenet --device cuda --state STATE --out OUT --initial INIT

torchrun's environment (RANK, WORLD_SIZE, ...) makes every process join the group (`distributed.init`); rank 0
writes the initial weights, the checkpoint and the log, and deletes the resume state once the checkpoint is
written. Without WORLD_SIZE the same command trains in one process. A SIGTERM/SIGUSR1 saves the resume state
and ends with status 128 + signal; the same command again resumes.
"""

# Length: one short function per subcommand and its argument parser; the work is in the library.

from __future__ import annotations

import argparse
import ast
import logging
import sys
from fractions import Fraction
from pathlib import Path

from ..grid import vocabulary as vocab  # standard library only: --help stays fast

PROG = "advlayers"
FORWARDED = ("cost", "verify")  # subcommands whose arguments belong to another module's main(argv)
INPUT_ERRORS = (ValueError, OSError)  # CheckpointError and vocab.ConfigError are ValueErrors

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A bad command line: reported as one line, status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage and exit; one line, raised to `main` instead
        raise UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------- argument types


def fraction(text: str) -> float:
    """A number written as a decimal or a fraction ('8/255', '0.03', '1e-2'); parsed, never evaluated."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 8/255, got {text!r}") from None


def override(text: str) -> tuple[str, object]:
    """FIELD=VALUE, the value a Python literal (epochs=1, precision='fp32', milestones=(30,60)) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _width(text: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a width multiplier such as 1 or 0.25, got {text!r}") from None
    return value


def _fmt_fraction(value: float) -> str:
    """8/255 for 0.0313725..., else the number."""
    f = Fraction(value).limit_denominator(1000)
    if f.denominator in (1, 255) and abs(float(f) - value) < 1e-12:
        return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)
    return f"{value:g}"


def _device(text: str | None) -> str:
    """A usable torch device name (default: cuda if available, else cpu); a bad one is a ValueError."""
    import torch

    if text is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {text}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    return text


# --------------------------------------------------------------------------- eval


def _load_data(data: str, root: str | None):
    from ..core.datasets import load_dataset, load_prepared

    if Path(data).is_file():
        return load_prepared(data)
    if data in vocab.DATASETS:
        return load_dataset(data, root)
    raise FileNotFoundError(f"--data {data!r} is neither a prepared dataset file nor a dataset name "
                            f"({', '.join(vocab.DATASETS)})")


def _attack_spec(args):
    if args.autoattack and args.apgd:
        raise UsageError("--autoattack and --apgd exclude each other")
    if args.autoattack:
        from ..core.autoattack import AutoAttackSpec

        return AutoAttackSpec(args.eps, version=args.autoattack)
    if args.apgd:
        from ..core.autoattack import APGDSpec

        return APGDSpec(args.eps, steps=args.steps, loss=args.apgd, restarts=args.restarts)
    from ..core.attacks import AttackSpec

    step_size = args.eps / 4 if args.step_size is None else args.step_size
    return AttackSpec(args.eps, step_size, args.steps, random_start=True, restarts=args.restarts)


def eval_command(args) -> int:
    spec = _attack_spec(args)  # settings first: a bad eps fails before anything is loaded
    import torch

    from ..core.checkpoints import load_checkpoint
    from ..core.evaluation import evaluate
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
    meta = payload.get("meta", {})
    record = evaluate(model, dataset.test, spec, n=args.n, seed=args.seed, batch_size=args.batch_size,
                      device=args.device, progress=False, checkpoint=str(args.checkpoint), arch=payload["arch"],
                      dataset=dataset.info.name, trained_on=payload["dataset"])
    print(f"{args.checkpoint}: {payload['arch']} (width {payload.get('width', 1.0):g}) trained on "
          f"{payload['dataset']}, pretraining {meta.get('pretraining', '?')}, retraining {meta.get('retraining', '?')}")
    settings = f"eps {_fmt_fraction(spec.eps)}"
    if not args.autoattack:
        settings += f", {spec.steps} steps"
        if not args.apgd:
            settings += f" of {_fmt_fraction(spec.step_size)}"
        settings += f", {spec.restarts} restart{'s' * (spec.restarts > 1)}"
    print(f"{record['attack']} ({settings}) on {record['n_eval']} test images of {dataset.info.name} "
          f"(seed {args.seed}), {record['seconds']:.1f} s")
    for what in ("clean", "robust"):
        acc, lo, hi = record[f"{what}_acc"], record[f"{what}_acc_lo"], record[f"{what}_acc_hi"]
        print(f"  {what + ' accuracy':16s} {100 * acc:6.2f}%   95% Wilson interval [{100 * lo:.2f}, {100 * hi:.2f}]%")
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------- layers


def layers_command(args) -> int:
    from .archs import layers_command as run

    return run(args)


# --------------------------------------------------------------------------- export


def export_command(args) -> int:
    from ..core.checkpoints import load_checkpoint
    from ..core.models import IMAGENET_MEAN, IMAGENET_STD
    from ..io import save_torch
    from .export import check_exportable, to_torchvision

    model, payload = load_checkpoint(args.checkpoint)
    check_exportable(model)
    _, state = to_torchvision(model)
    save_torch(args.out, state)
    arch, classes = payload["arch"], payload["num_classes"]
    print(f"wrote {args.out}: a torchvision {arch} state_dict; load it with "
          f"torchvision.models.{arch}(num_classes={classes}).load_state_dict(torch.load({str(args.out)!r}))")
    print(f"inputs must be normalised with the ImageNet mean {IMAGENET_MEAN} and std {IMAGENET_STD}: torchvision "
          f"models expect normalised input (the advlayers net took [0, 1] images and normalised them itself)")
    return 0


# --------------------------------------------------------------------------- pretrain


def pretrain_command(args) -> int:
    """Pretrain one net (one process, or one rank of a torchrun group): `advlayers.jobs.pretrain.pretrain_files`."""
    from ..jobs.pretrain import pretrain_files

    return pretrain_files(data=args.data, dataset=args.dataset, arch=args.arch, pretraining=args.pretraining,
                          recipe=args.recipe,
                          overrides=dict(args.override), width=args.width, seed=args.seed, device=_device(args.device),
                          state=args.state, out=args.out, initial=args.initial, logfile=args.logfile,
                          threads=args.threads)


# --------------------------------------------------------------------------- cost, verify


def _forward(name: str, argv: list[str]) -> int:
    if name == "cost":
        from .cost import main as cost_main

        run = cost_main
    else:
        from .verify import main as run
    try:
        return int(run(argv) or 0)
    except SystemExit as e:  # its argparse (--help, a usage error)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


# --------------------------------------------------------------------------- parser


def _add_pretrain_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain one net (under torchrun: one rank of DDP)",
                       usage="advlayers pretrain --data D --arch A --pretraining P --recipe R --state S --out O "
                       "--initial I [options]",
                       description="Pretrain one net from a prepared dataset; under torchrun --nproc_per_node=N, "
                       "N processes (DDP). Writes --initial, then --out; resumes from --state.")
    p.add_argument("--data", required=True, metavar="D", help="prepared dataset file")
    p.add_argument("--dataset", metavar="NAME", help="name stored in the checkpoint (default: D's)")
    p.add_argument("--arch", required=True, metavar="A", help="resnet18, resnet50, vgg11_bn, vgg16_bn")
    p.add_argument("--pretraining", required=True, choices=vocab.PRETRAININGS, metavar="P",
                   help="conventional or adversarial")
    p.add_argument("--recipe", required=True, metavar="R", help="preset: cifar10, imagenet, mnist5k-demo, ...")
    p.add_argument("--override", action="append", default=[], type=override, metavar="FIELD=VALUE",
                   help="recipe field (Python literal), repeatable")
    p.add_argument("--width", type=_width, default=1.0, metavar="W", help="channel multiplier (1)")
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="seed (0)")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--state", required=True, metavar="S", help="resume state file")
    p.add_argument("--out", required=True, metavar="O", help="trained checkpoint (rank 0)")
    p.add_argument("--initial", required=True, metavar="I", help="epoch-0 weights (rank 0)")
    p.add_argument("--logfile", metavar="L", help="log file (rank 0)")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads per process")
    p.set_defaults(run=pretrain_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Identify layers susceptible to adversarial attacks.",
                     epilog=f"'{PROG} COMMAND --help' describes a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("eval", help="clean and robust accuracy of a checkpoint",
                       usage="advlayers eval CKPT --data PATH_OR_NAME --eps 8/255 [options]",
                       description="Clean and robust accuracy (95% Wilson intervals) of a checkpoint on test "
                       "images: L-inf PGD (default), APGD or AutoAttack on the true label.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", required=True, metavar="D", help="prepared dataset file, or a name (digits, ...)")
    p.add_argument("--root", metavar="DIR", help="dataset folder, with a name")
    p.add_argument("--eps", type=fraction, required=True, metavar="E", help="L-inf radius in pixels, e.g. 8/255")
    p.add_argument("--steps", type=_non_negative_int, default=200, metavar="K", help="attack steps (200)")
    p.add_argument("--step-size", type=fraction, metavar="S", help="PGD step (default: eps/4)")
    p.add_argument("--restarts", type=_positive_int, default=1, metavar="R", help="restarts (1)")
    p.add_argument("--n", type=_positive_int, default=1000, help="test images, a seeded subset (1000)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=_positive_int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=_positive_int, help=argparse.SUPPRESS)
    p.add_argument("--autoattack", nargs="?", const="standard", choices=("standard", "plus", "rand"),
                   metavar="V", help="AutoAttack (standard) instead of PGD")
    p.add_argument("--apgd", choices=("ce", "dlr"), metavar="LOSS", help="APGD (ce or dlr) instead of PGD")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--json", metavar="OUT", help="also write the record as JSON")
    p.set_defaults(run=eval_command)

    p = sub.add_parser("layers", help="the layer table of an architecture",
                       description="Every conv/linear layer: index, module, advlayers and torchvision name, "
                       "BatchNorm, parameters.")
    p.add_argument("arch", metavar="ARCH", help="resnet18, resnet50, vgg11_bn, vgg16_bn, torchvision:NAME, timm:NAME, "
                   "package.module:function, or an arch of --config's `archs`")
    p.add_argument("--width", type=_width, default=1.0, metavar="W", help="channel multiplier (1)")
    p.add_argument("--config", metavar="FILE", help="a workflow config whose `archs` section names ARCH")
    p.add_argument("--image-size", type=_positive_int, default=32, help="input size of the trace (32)")
    p.add_argument("--nodes", action="store_true", help="list the fx nodes and output sizes (for archs.NAME.cuts)")
    p.add_argument("--num-classes", type=_positive_int, default=10, help=argparse.SUPPRESS)
    p.set_defaults(run=layers_command)

    p = sub.add_parser("export", help="a torchvision state_dict of a ResNet checkpoint",
                       description="Write a ResNet checkpoint (width 1) as a torchvision state_dict; the model then "
                       "needs ImageNet-normalised inputs.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("out", metavar="OUT")
    p.set_defaults(run=export_command)

    _add_pretrain_parser(sub)

    sub.add_parser("cost", help="compute-cost model (advlayers.tools.cost)", add_help=False)
    sub.add_parser("verify", help="verify a results folder (advlayers.tools.verify)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return _forward(argv[0], argv[1:])
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help
            return e.code if isinstance(e.code, int) else 0
        if args.command is None:
            parser.print_help()
            return 2
        return args.run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except INPUT_ERRORS as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
