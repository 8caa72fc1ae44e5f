"""`advlayers tensorboard TABLE --logdir DIR`: the training curves table as TensorBoard event files.

One TensorBoard run per trained net (named like its training job: `<dataset>/<arch>/seed<S>/<pretraining>` for a
pretrained net, `..._then_<retraining>/<cell>` for a retrained cell), scalars `train/loss`, `train/accuracy`,
`train/lr` and `train/seconds` at step = epoch, and `heldout/clean_accuracy`, `heldout/robust_accuracy` at the
epochs that were evaluated on held-out tuning images (config `eval_each_epoch`). TensorBoard is optional (`pip install "advlayers[tensorboard]"`,
or `pip install tensorboard`); without it the command stops with a one-line error saying so, before reading
anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..grid import layout

SCALARS = {"loss": "train/loss", "train_acc": "train/accuracy", "lr": "train/lr", "seconds": "train/seconds",
           "heldout_clean_acc": "heldout/clean_accuracy", "heldout_robust_acc": "heldout/robust_accuracy"}
INSTALL = 'pip install "advlayers[tensorboard]" (or: pip install tensorboard)'


def require_tensorboard() -> None:
    """ValueError (one line) unless the `tensorboard` package is importable (torch's SummaryWriter needs it)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(f"writing TensorBoard events needs the optional package tensorboard, not installed: {INSTALL}")


def run_name(net: dict) -> str:
    """The TensorBoard run of one net of the table: its training job's name (`grid.layout.JOBS`)."""
    fields = {k: net[k] for k in ("dataset", "arch", "seed", "pretraining")}
    if net["cell"] == "pretrained":
        return layout.NET_JOB.format(**fields)
    return layout.JOBS["retrain"].format(**fields, retraining=net["retraining"], group=net["cell"])


def write_events(table, logdir) -> list[str]:
    """Write one event file per net of a training-curves table under `logdir`; returns the run names."""
    require_tensorboard()
    import pandas as pd
    from torch.utils.tensorboard import SummaryWriter

    from ..report.training_curves import KEY

    runs = []
    for ident, rows in table.groupby(list(KEY), sort=False):
        name = run_name(dict(zip(KEY, ident)))
        with SummaryWriter(log_dir=str(Path(logdir) / name)) as writer:
            for row in rows.sort_values("epoch").itertuples():
                for column, tag in SCALARS.items():
                    value = getattr(row, column, None)
                    if value is not None and not pd.isna(value):  # held-out: only the evaluated epochs
                        writer.add_scalar(tag, float(value), int(row.epoch))
        runs.append(name)
    return runs


def tensorboard_command(args) -> int:
    """The CLI command: check tensorboard, read the table (its digest and inputs checked), write the events."""
    require_tensorboard()
    from ..io import read_table
    from ..report.training_curves import KEY, RECORD

    table = read_table(args.table)
    missing = [c for c in (*KEY, *RECORD) if c not in table]
    if missing:
        raise ValueError(f"{args.table} is not a training-curves table (it lacks {missing}); give "
                         f"{layout.table_path(layout.TRAINING_CURVES)}")
    runs = write_events(table, args.logdir)
    print(f"wrote TensorBoard events of {len(runs)} nets ({len(table)} epochs) under {args.logdir}; view them with "
          f"tensorboard --logdir {args.logdir}")
    return 0
