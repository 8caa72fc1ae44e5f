"""Result tables: evaluation records (one JSON per checkpoint) gathered into one typed DataFrame/parquet."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

# One row per checkpoint of the cut-off experiment; column order as written to results/tables/cutoff.parquet.
CUTOFF_COLUMNS = (
    "dataset", "arch", "pretraining", "retraining", "direction", "cutoff", "retrained_modules", "seed", "epochs",
    "attack", "eps", "step_size", "steps", "restarts", "n_eval", "clean_acc", "robust_acc", "checkpoint",
)
_DTYPES = {
    "dataset": "string", "arch": "string", "pretraining": "string", "retraining": "string", "direction": "string",
    "cutoff": "Int64", "seed": "int64", "epochs": "int64", "attack": "string", "eps": "float64",
    "step_size": "float64", "steps": "int64", "restarts": "int64", "n_eval": "int64", "clean_acc": "float64",
    "robust_acc": "float64", "checkpoint": "string",
}


def attack_name(record: dict) -> str:
    """'PGD-200' for a multi-step attack, 'FGSM-RS' for one random-start step, 'clean' for none."""
    if record["steps"] == 0:
        return "clean"
    if record["steps"] == 1 and record.get("random_start", True):
        return "FGSM-RS"
    return f"PGD-{record['steps']}"


def read_record(path: str | os.PathLike) -> dict:
    with open(path) as f:
        record = json.load(f)
    missing = [c for c in CUTOFF_COLUMNS if c not in record and c != "attack"]
    if missing:
        raise ValueError(f"evaluation record {path} lacks fields {missing}")
    return record


def cutoff_table(paths) -> pd.DataFrame:
    """One row per evaluation record (checkpoint), columns CUTOFF_COLUMNS, sorted for reading.

    `cutoff` is <NA> for the pretrained nets; `retrained_modules` is a list of module names.
    """
    rows = []
    for path in paths:
        record = read_record(path)
        record["attack"] = attack_name(record)
        rows.append({c: record[c] for c in CUTOFF_COLUMNS})
    table = pd.DataFrame(rows, columns=list(CUTOFF_COLUMNS))
    table["retrained_modules"] = table["retrained_modules"].map(lambda m: [str(x) for x in m])
    table = table.astype(_DTYPES)
    order = {"conventional": 0, "adversarial": 1, "none": 0, "before": 1, "after": 2}
    table = table.sort_values(
        ["dataset", "arch", "pretraining", "direction", "cutoff"],
        key=lambda s: s.map(order) if s.name in ("pretraining", "direction") else s,
        na_position="first",
    )
    return table.reset_index(drop=True)


def write_parquet_atomic(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a partial parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
