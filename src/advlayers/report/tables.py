"""Result tables, gathered from the evaluation records, with one name per concept in every table.

Every accuracy has its 95% Wilson interval (`*_lo`, `*_hi`), every row its provenance (how the net was made
and evaluated), and a table refuses duplicate keys (a swapped or twice-listed net is an error, not a row).

Tables (results/tables/*.parquet):
  cutoff          Fig. 2-4: one row per (dataset, arch, seed, pretraining, direction, cut-off)
  layer_cutoff    Fig. 5: one row per (..., layer cut-off)
  module_subsets  Fig. 6: one row per (..., subset)
  reinit          Fig. 7: one row per (..., layer, operation, bn_policy)
  feature_divergence  Fig. 8 statistics: one row per (..., module)
  outcomes        per test image: clean_correct / robust_correct of every evaluated net (paired statistics)
  training_curves one row per (trained net, epoch): loss, train_acc, lr, seconds, held-out accuracy (`training_curves`)
A cell shared by several coordinates (before 6 = after 0 = subset 111111) appears in each, from one evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import pandas as pd

from ..grid import layout
from ..io import atomic_write, file_digests, read_json, read_parquet, read_table, write_parquet

ID_COLUMNS = ("dataset", "arch", "width", "seed", "pretraining", "retraining", "cell", "retrained_modules")
EVAL_COLUMNS = ("attack", "eps", "step_size", "steps", "restarts", "image_part", "n_eval", "eval_seed", "clean_acc",
                "clean_acc_lo", "clean_acc_hi", "robust_acc", "robust_acc_lo", "robust_acc_hi")
PROVENANCE_COLUMNS = ("epochs", "recipe", "recipe_digest", "precision", "checkpoint", "checkpoint_digest",
                      "advlayers_version", "git_commit", "git_dirty", "torch_version", "torchvision_version",
                      "cuda_version", "device_name", "config_digest", "slurm_job_id", "created")
COORDINATES = {"cutoff": ("direction", "cutoff"), "layer_cutoff": ("direction", "layer_cutoff"),
               "module_subsets": ("subset",)}
EVALUATION_KEY = ("dataset", "arch", "seed", "pretraining", "cell", "attack")
_DTYPES = {
    "dataset": "string", "arch": "string", "width": "float64", "seed": "int64", "pretraining": "string",
    "retraining": "string", "cell": "string", "direction": "string", "cutoff": "Int64", "layer_cutoff": "Int64",
    "subset": "string", "attack": "string", "image_part": "string", "eps": "float64", "step_size": "float64", "steps": "int64",
    "restarts": "int64", "n_eval": "int64", "eval_seed": "int64", "epochs": "int64", "recipe": "string",
    "recipe_digest": "string", "precision": "string", "checkpoint": "string", "checkpoint_digest": "string",
    "git_commit": "string", "git_dirty": "boolean", "advlayers_version": "string", "torch_version": "string",
    "torchvision_version": "string", "cuda_version": "string", "device_name": "string", "config_digest": "string",
    "slurm_job_id": "string", "created": "string",
}
for _c in EVAL_COLUMNS:
    if _c.endswith(("_acc", "_lo", "_hi")):
        _DTYPES[_c] = "float64"


class TableError(ValueError):
    """Records that cannot make a valid table (duplicates, missing cells)."""


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of one evaluation file (`workflow/scripts/evaluate.py` writes {"records": [...], ...})."""
    data = read_json(path)  # its self-digest checked: an edited or damaged record is an error
    records = data["records"]
    for r in records:
        missing = [c for c in (*ID_COLUMNS, "clean_acc", "robust_acc") if c not in r]
        if missing:
            raise TableError(f"evaluation record in {path} lacks fields {missing}")
    return records


def _flatten(record: dict) -> dict:
    row = {k: v for k, v in record.items() if k not in ("provenance", "outcomes", "history")}
    row.update({k: v for k, v in (record.get("provenance") or {}).items() if k in PROVENANCE_COLUMNS})
    if isinstance(row.get("recipe"), dict):
        row["recipe"] = json.dumps(row["recipe"], sort_keys=True)
    return row


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    return table.astype({c: t for c, t in _DTYPES.items() if c in table})


def unique(table: pd.DataFrame, key: Iterable[str], what: str) -> pd.DataFrame:
    key = [k for k in key if k in table]
    dup = table[table.duplicated(key, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise TableError(f"{what}: {len(dup)} rows share the key {dict((k, first[k]) for k in key)}; each key "
                         "must appear once (a swapped or duplicated artifact? `snakemake verify` lists it)")
    return table


PART_KEY = ("dataset", "arch")


def one_part(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """Every row of a (dataset, arch) comes from one image part (tuning or confirmation, docs/claims-v2.md):
    nets compared image by image must have seen the same images, and verdicts must not mix parts."""
    if "image_part" not in table or not len(table):
        return table
    parts = table.groupby(list(PART_KEY))["image_part"].unique()
    for key, found in parts.items():
        if len(found) > 1:
            raise TableError(f"{what}: the evaluations of {dict(zip(PART_KEY, key))} mix image parts "
                             f"{sorted(map(str, found))}; evaluate every net on one part (config eval.images) "
                             "and rebuild the others")
    return table


def evaluations_table(paths) -> pd.DataFrame:
    """One row per evaluated net: ID, evaluation and provenance columns."""
    rows = [_flatten(r) for p in paths for r in read_records(p)]
    table = pd.DataFrame(rows)
    columns = [c for c in (*ID_COLUMNS, *EVAL_COLUMNS, *PROVENANCE_COLUMNS) if c in table]
    table = _typed(table[columns])
    table["retrained_modules"] = table["retrained_modules"].map(lambda m: [str(x) for x in m])
    return one_part(unique(table, EVALUATION_KEY, "evaluations"), "evaluations").reset_index(drop=True)


def coordinate_table(name: str, paths, coordinates: list[dict]) -> pd.DataFrame:
    """A figure's table (cutoff, layer_cutoff, module_subsets): each coordinate row (`plan.table_coordinates`)
    joined with the evaluation of its cell, for every seed. A coordinate whose cell was not evaluated is an
    error naming it."""
    evals = evaluations_table(paths)
    coords = pd.DataFrame(coordinates)
    merged = coords.merge(evals, on=["dataset", "arch", "pretraining", "cell"], how="left", indicator=True)
    missing = merged[merged["_merge"] == "left_only"]
    if len(missing):
        m = missing.iloc[0]
        raise TableError(f"table {name}: no evaluation of cell {m['cell']} of the {m['pretraining']} {m['arch']} on "
                         f"{m['dataset']} (coordinates {dict((c, m[c]) for c in COORDINATES[name])})")
    merged = merged.drop(columns="_merge")
    id_cols = [c for c in ID_COLUMNS if c != "cell"]
    columns = [*id_cols, *COORDINATES[name], "cell",
               *[c for c in (*EVAL_COLUMNS, *PROVENANCE_COLUMNS) if c in merged]]
    table = _typed(merged[columns])
    order = {"conventional": 0, "adversarial": 1, "none": 0, "before": 1, "after": 2}
    sort = ["dataset", "arch", "seed", "pretraining", *COORDINATES[name], "attack"]
    table = table.sort_values(sort, key=lambda s: s.map(order) if s.name in ("pretraining", "direction") else s,
                              na_position="first")
    return unique(table, ["dataset", "arch", "seed", "pretraining", *COORDINATES[name], "attack"],
                  f"table {name}").reset_index(drop=True)


def outcomes_table(paths) -> pd.DataFrame:
    """Per-sample outcomes of every evaluation (the `.outcomes.parquet` beside each record file)."""
    parts = [read_parquet(p) for p in paths]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    table = unique(table, ["dataset", "arch", "seed", "pretraining", "cell", "attack", "test_index"], "outcomes")
    return one_part(table, "outcomes")


STACKED_KEYS = {
    "reinit": ("dataset", "arch", "seed", "pretraining", "layer_index", "operation", "bn_policy", "attack"),
    "feature_divergence": ("dataset", "arch", "seed", "pretraining", "module"),
}


def stacked_table(name: str, paths) -> pd.DataFrame:
    """reinit / feature_divergence: the per-net parquet files stacked, keys unique."""
    table = pd.concat([read_table(p) for p in paths], ignore_index=True)
    return one_part(unique(_typed(table), STACKED_KEYS[name], f"table {name}"), f"table {name}").reset_index(drop=True)


GAP_FLAG = 0.05  # a PGD accuracy more than 5 points above AutoAttack's on the same images: possible gradient masking


def robustness_gap_table(paths) -> pd.DataFrame:
    """PGD robust accuracy minus AutoAttack's, per net, on the images AutoAttack evaluated (paired).

    `paths`: outcome files of the AutoAttack and the PGD evaluations. One row per (dataset, arch, seed, pretraining,
    cell): n_images, pgd_attack, pgd_robust_acc, autoattack, autoattack_robust_acc, robustness_gap with its 95%
    paired-bootstrap interval (gap_lo, gap_hi) and possible_gradient_masking (gap > 5 points)."""
    from ..stats import bootstrap

    outcomes = outcomes_table(paths)
    is_aa = outcomes["attack"].str.startswith("AutoAttack")
    aa, pgd = outcomes[is_aa], outcomes[~is_aa]
    key = ["dataset", "arch", "seed", "pretraining", "cell"]
    rows = []
    for ident, part in aa.groupby(key):
        other = pgd.merge(part[[*key, "test_index"]], on=[*key, "test_index"])
        if len(other) != len(part):
            raise TableError(f"robustness_gap: the PGD evaluation of {dict(zip(key, ident))} lacks "
                             f"{len(part) - len(other)} of AutoAttack's images")
        a = part.sort_values("test_index")["robust_correct"].to_numpy()[None]
        b = other.sort_values("test_index")["robust_correct"].to_numpy()[None]
        gap, lo, hi = bootstrap({"pgd": b, "aa": a}, lambda acc: acc["pgd"] - acc["aa"])
        rows.append({**dict(zip(key, ident)), "n_images": len(part), "pgd_attack": other["attack"].iloc[0],
                     "pgd_robust_acc": float(b.mean()), "autoattack": part["attack"].iloc[0],
                     "autoattack_robust_acc": float(a.mean()), "robustness_gap": gap, "gap_lo": lo, "gap_hi": hi,
                     "possible_gradient_masking": bool(gap > GAP_FLAG)})
    return pd.DataFrame(rows)


REPORT_COLUMNS = ("dataset", "arch", "seed", "pretraining", "retraining", "direction", "cutoff", "layer_cutoff",
                  "subset", "cell", "layer", "operation", "bn_policy", "module", "attack", "image_part", "n_eval", "clean_acc",
                  "clean_acc_lo", "clean_acc_hi", "robust_acc", "robust_acc_lo", "robust_acc_hi", "mmd2",
                  "mmd2_lo", "mmd2_hi", "mmd_p_value", "detector_auroc", "detector_auroc_lo", "detector_auroc_hi", "pgd_robust_acc",
                  "autoattack_robust_acc", "robustness_gap", "gap_lo", "gap_hi", "possible_gradient_masking",
                  "precision", "epoch", "loss", "train_acc", "lr", "seconds")


def to_html(table: pd.DataFrame, name: str, max_rows: int = 500) -> str:
    """A table as a self-contained HTML page for the report (its main columns, numbers to 3 decimals); the
    parquet file has every column. `outcomes` (one row per image) is summarised per net instead."""
    import html

    if name == "outcomes" and len(table):
        table = (table.groupby(["dataset", "arch", "seed", "pretraining", "cell", "attack"], as_index=False)
                 .agg(n_eval=("test_index", "size"), clean_acc=("clean_correct", "mean"),
                      robust_acc=("robust_correct", "mean")))
    shown = table[[c for c in REPORT_COLUMNS if c in table]].head(max_rows)
    body = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}", border=0)
    more = f"<p>{len(table) - max_rows} more rows in the parquet file.</p>" if len(table) > max_rows else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(name) + "</title><style>"
            "body{font-family:sans-serif;font-size:12px} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
            "padding:2px 5px;text-align:right}</style></head><body>"
            f"<h3>{html.escape(name)} ({len(table)} rows)</h3>{body}{more}</body></html>\n")


def build(table: str, parts, coordinates: list[dict]) -> pd.DataFrame:
    """The table named `table` (a `grid.layout` table name) from its parts (`grid.plan.table_inputs`)."""
    kind = layout.table_kind(table)
    if kind in COORDINATES:
        return coordinate_table(kind, parts, coordinates)
    if kind == "outcomes":
        return outcomes_table(parts)
    if kind == "robustness_gap":
        return robustness_gap_table(parts)
    if kind == layout.TRAINING_CURVES:
        from .training_curves import training_curves_table

        return training_curves_table(parts)
    return stacked_table(kind, parts)


def run(*, table: str, parts, coordinates: list[dict], out: str, html: str) -> pd.DataFrame:
    """The table job: build the table, write it with the digests of its parts, and its HTML view. The training
    curves' parts are the training jobs' outputs: its parts are the checkpoint files in them."""
    if layout.table_kind(table) == layout.TRAINING_CURVES:
        from .training_curves import checkpoint_files

        parts = checkpoint_files(parts)
    result = build(table, parts, coordinates)
    write_parquet(out, result, metadata={"inputs": file_digests({str(p): p for p in parts})})
    atomic_write(html, to_html(result, table))
    return result
