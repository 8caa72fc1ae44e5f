"""The `advlayers` command: evaluate, inspect, export and pretrain nets; the cost model; verification.

    advlayers eval CKPT --data digits --eps 8/255 --steps 200    clean and robust accuracy of a checkpoint
    advlayers layers resnet18                                   the layer table of an architecture
    advlayers export CKPT OUT                                   a torchvision state_dict of a ResNet checkpoint
    advlayers pretrain --data ... --out ...                     pretrain one net (also under torchrun: DDP)
    advlayers tensorboard TABLE --logdir DIR                    training curves as TensorBoard events (optional)
    advlayers cost ...                                          the compute-cost model (`advlayers.tools.cost`)
    advlayers verify ...                                        checks of a results folder (`advlayers.tools.verify`)
    advlayers acceptance --device cuda --out DIR                one-GPU acceptance run (`advlayers.tools.acceptance`)

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
import logging
import sys

from ..grid import vocabulary as vocab  # standard library only: --help stays fast
from . import eval_command
from .cli_args import UsageError, _device, _non_negative_int, _Parser, _positive_int, _width, fraction, override

__all__ = ["main", "build_parser", "fraction", "override", "UsageError"]

PROG = "advlayers"
FORWARDED = ("cost", "verify", "acceptance")  # subcommands whose arguments belong to another module's main(argv)
INPUT_ERRORS = (ValueError, OSError)  # CheckpointError and vocab.ConfigError are ValueErrors

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- tensorboard


def tensorboard_command(args) -> int:
    from .tb_export import tensorboard_command as run

    return run(args)


# --------------------------------------------------------------------------- pretrain


def pretrain_command(args) -> int:
    """Pretrain one net (one process, or one rank of a torchrun group): `advlayers.jobs.pretrain.pretrain_files`."""
    from ..jobs.pretrain import pretrain_files

    return pretrain_files(data=args.data, dataset=args.dataset, arch=args.arch, pretraining=args.pretraining,
                          recipe=args.recipe,
                          overrides=dict(args.override), width=args.width, seed=args.seed, device=_device(args.device),
                          state=args.state, out=args.out, initial=args.initial, logfile=args.logfile,
                          threads=args.threads, epoch_eval=args.eval_each_epoch)


# --------------------------------------------------------------------------- cost, verify


def _forward(name: str, argv: list[str]) -> int:
    if name == "cost":
        from .cost import main as cost_main

        run = cost_main
    elif name == "acceptance":
        from .acceptance import main as run
    else:
        from .verify import main as run
    try:
        return int(run(argv) or 0)
    except SystemExit as e:  # its argparse (--help, a usage error)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


# --------------------------------------------------------------------------- parser


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as {\"n\": 256, ...}")
    return value


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
    p.add_argument("--eval-each-epoch", type=_json_object, metavar="JSON",
                   help="held-out evaluation after each epoch: the settings of config eval_each_epoch as the "
                   "workflow resolves them (n, eps, step_size, steps, seed, batch_size; attack pgd, images tuning, "
                   "restarts 1; another key or value is refused)")
    p.set_defaults(run=pretrain_command)


def _version() -> str:
    """The installed distribution's version (what pip reports), else the package's own."""
    from importlib import metadata

    from .. import __version__

    try:
        return metadata.version("advlayers")
    except metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Identify layers susceptible to adversarial attacks.",
                     epilog=f"'{PROG} COMMAND --help' describes a command.")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    eval_command.add_parser(sub)

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

    p = sub.add_parser("tensorboard", help="the training curves table as TensorBoard event files",
                       description="Write the per-epoch training records (results/tables/training_curves.parquet) as "
                       "TensorBoard events, one run per trained net. Needs the optional package tensorboard.")
    p.add_argument("table", metavar="TABLE", help="the training curves table (results/tables/training_curves.parquet)")
    p.add_argument("--logdir", required=True, metavar="DIR", help="where the event files go")
    p.set_defaults(run=tensorboard_command)

    sub.add_parser("cost", help="compute-cost model (advlayers.tools.cost)", add_help=False)
    sub.add_parser("verify", help="verify a results folder (advlayers.tools.verify)", add_help=False)
    sub.add_parser("acceptance", help="one-GPU acceptance run, throughput.yaml (advlayers.tools.acceptance)",
                   add_help=False)
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
