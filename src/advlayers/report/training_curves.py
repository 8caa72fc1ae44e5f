"""Training curves: the per-epoch records of every trained net, one table row per (net, epoch).

Each training job keeps its epochs' records in its checkpoint (`meta.history`, written by
`core.training.train_epoch`: mean training loss, training accuracy on the batches as trained - the adversarial
examples in adversarial training -, learning rate after the epoch, and the epoch's wall-clock seconds; with config
`eval_each_epoch` also the clean and robust accuracy of held-out tuning images after the epoch, `HELDOUT`). The table
`results/tables/training_curves.parquet` gathers them from the pretrained nets and the retraining cells (read with
`core.checkpoints.read_checkpoint`: weights_only, digest verified), so that whether a cell converged can be seen
(the figure `training_curves`) and exported (`advlayers tensorboard`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ..grid import layout

KEY = ("dataset", "arch", "seed", "pretraining", "retraining", "cell")
RECORD = ("epoch", "loss", "train_acc", "lr", "seconds")
# `core.epoch_eval.FIELDS`, in every row: missing (NA) where the net's training did not evaluate after its epochs
HELDOUT = ("heldout_clean_acc", "heldout_robust_acc", "heldout_attack", "heldout_eps", "heldout_n", "heldout_seconds")
COLUMNS = (*KEY, *RECORD, *HELDOUT)
DTYPES = {"dataset": "string", "arch": "string", "seed": "int64", "pretraining": "string", "retraining": "string",
          "cell": "string", "epoch": "int64", "loss": "float64", "train_acc": "float64", "lr": "float64",
          "seconds": "float64", "heldout_clean_acc": "float64", "heldout_robust_acc": "float64",
          "heldout_attack": "string", "heldout_eps": "float64", "heldout_n": "Int64", "heldout_seconds": "float64"}


class HistoryError(ValueError):
    """A checkpoint whose training history cannot make table rows."""


def checkpoint_files(parts) -> list[str]:
    """The checkpoints of the training jobs' outputs: a pretrained file as it is, a retraining group's folder as
    the cell checkpoints in it (recognised by `grid.layout`; anything else in the folder is ignored)."""
    files = []
    for part in map(str, parts):
        if not os.path.isdir(part):
            files.append(part)
            continue
        inside = sorted(os.path.join(part, name) for name in os.listdir(part))
        files += [f for f in inside if layout.parse(Path(f).as_posix(), ("cell",)) is not None]
    return files


def history_rows(payload: dict, source: str = "checkpoint") -> list[dict]:
    """The table rows of one checkpoint payload (`read_checkpoint`): one per epoch of its `meta.history`; none
    for a net without history (imported published weights). A record that lacks a field, or whose epochs are
    not 1, 2, ..., is an error naming the checkpoint."""
    meta = payload.get("meta") or {}
    ident = {"dataset": payload.get("dataset"), "arch": payload.get("arch"), "seed": payload.get("seed"),
             "pretraining": meta.get("pretraining"), "retraining": meta.get("retraining"), "cell": meta.get("cell")}
    missing = [k for k, v in ident.items() if v is None]
    if missing:
        raise HistoryError(f"{source} does not say its {', '.join(missing)} (not made by the workflow's training jobs?)")
    rows = []
    for i, record in enumerate(meta.get("history") or []):
        if not isinstance(record, dict) or any(k not in record for k in RECORD):
            lacks = [k for k in RECORD if not isinstance(record, dict) or k not in record]
            raise HistoryError(f"{source}: epoch record {i + 1} of its history lacks {lacks}")
        if int(record["epoch"]) != i + 1:
            raise HistoryError(f"{source}: its history's record {i + 1} is of epoch {record['epoch']} (epochs must "
                               "run 1, 2, ... without gaps)")
        if not math.isfinite(float(record["loss"])):
            raise HistoryError(f"{source}: loss {record['loss']} at epoch {record['epoch']}")
        rows.append({**ident, **{k: record[k] for k in RECORD}, **{k: record.get(k) for k in HELDOUT}})
    return rows


def table_from_payloads(payloads: dict) -> pd.DataFrame:
    """{source: checkpoint payload} -> the table, sorted, one row per (net, epoch); a net listed twice is an error."""
    rows, seen = [], {}
    for source, payload in payloads.items():
        new = history_rows(payload, source)
        if new and (net := tuple(new[0][k] for k in KEY)) in seen:
            raise HistoryError(f"{source} and {seen[net]} are the same net {dict(zip(KEY, net))}: each trained net "
                               "must appear once (a copied or swapped checkpoint? `advlayers verify` lists it)")
        if new:
            seen[net] = source
        rows += new
    table = pd.DataFrame(rows, columns=list(COLUMNS)).astype(DTYPES)
    order = {"pretraining": {"conventional": 0, "adversarial": 1}, "retraining": {"none": 0}}  # pretrained net first
    table = table.sort_values(["dataset", "arch", "seed", "pretraining", "retraining", "cell", "epoch"],
                              key=lambda s: s.map(lambda v: order[s.name].get(v, 1)) if s.name in order else s)
    return table.reset_index(drop=True)


def training_curves_table(files) -> pd.DataFrame:
    """The table from checkpoint files (`checkpoint_files`), each read with its digest verified."""
    from ..core.checkpoints import read_checkpoint

    payloads = {}
    for f in files:
        payload = read_checkpoint(f)
        payload.pop("model", None)  # the weights are not needed past their digest check
        payloads[str(f)] = payload
    return table_from_payloads(payloads)
