"""The merge of an evaluation's shards (rule `merge_shards`): the unit's records and per-sample outcomes, exactly
as one unsharded job would have written them (but `seconds`, the shards' sum).

Each shard (`<unit>-s<i>of<k>`, `grid.layout.shard_unit`) evaluated a disjoint slice of the same seeded test
images (`grid.sharding.shard_bounds`); with the attack's random stream drawn per batch from (seed, position)
(`core.evaluation.batch_generator`), its per-sample outcomes are the unsharded run's. The merge refuses, with
one line, shards that are missing or duplicated, of other counts, that do not tile the images, or that differ
in what they evaluated (evaluation settings, data and checkpoint digests, cells).
"""

from __future__ import annotations

import logging

from ..grid import layout
from ..io import SELF_DIGEST, read_json, read_parquet_arrow, write_json, write_parquet
from ..stats import wilson

log = logging.getLogger(__name__)

SHARD_FIELDS = ("shard_index", "shards", "shard_start", "shard_stop")


class ShardError(ValueError):
    """Shards that do not make one evaluation."""


def _unit(path: str) -> str:
    found = layout.parse(path, ("evaluation",))
    if found is None:
        raise ShardError(f"{path} is not an evaluation's records file")
    return found[1]["unit"]


def check_shards(paths: list[str], unit: str) -> list[tuple[int, int]]:
    """[(index, count)] of the shard files `paths`, which must be shards 0..k-1 of `unit`, each once."""
    found = []
    for p in paths:
        shard = layout.unit_shard(_unit(p))
        if shard is None or shard[0] != unit:
            raise ShardError(f"{p} is not a shard of evaluation unit {unit!r}")
        found.append(shard[1:])
    counts = sorted({k for _, k in found})
    if len(counts) != 1:
        raise ShardError(f"shards of {unit} from different splits ({', '.join(f'of {k}' for k in counts)}): merge one")
    k = counts[0]
    indices = sorted(i for i, _ in found)
    if indices != list(range(k)):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        missing = sorted(set(range(k)) - set(indices))
        raise ShardError(f"shards of {unit} (of {k}) are not complete and distinct: missing {missing}, duplicated {dup}")
    return found


def _same(what: str, values: list, unit: str) -> None:
    if any(v != values[0] for v in values[1:]):
        raise ShardError(f"shards of {unit} differ in {what}: they are not one evaluation; rerun the stale shards")


def _merge_record(parts: list[dict], rows: list[dict], unit: str) -> dict:
    """One cell's record from its shards' records (in shard order) and its merged outcome rows."""
    _same(f"the net evaluated (checkpoint digest of {parts[0].get('cell')})", [r["checkpoint_digest"] for r in parts],
          unit)
    position = 0
    for r in parts:
        if r["shard_start"] != position or r["shard_stop"] - r["shard_start"] != r["n_eval"]:
            raise ShardError(f"shards of {unit} do not tile the test images: shard {r['shard_index']} covers "
                             f"[{r['shard_start']}, {r['shard_stop']}), expected to start at {position}")
        position = r["shard_stop"]
    index = [row["test_index"] for row in rows]
    if len(set(index)) != len(index):
        raise ShardError(f"shards of {unit} evaluated a test image twice (cell {parts[0]['cell']})")
    n = len(rows)
    k_clean = sum(row["clean_correct"] for row in rows)
    k_robust = sum(row["robust_correct"] for row in rows)
    record = {k: v for k, v in parts[0].items() if k not in SHARD_FIELDS}
    record.update(n_eval=n, clean_acc=k_clean / n, clean_acc_lo=wilson(k_clean, n)[0], clean_acc_hi=wilson(k_clean, n)[1],
                  robust_acc=k_robust / n, robust_acc_lo=wilson(k_robust, n)[0], robust_acc_hi=wilson(k_robust, n)[1],
                  seconds=sum(r["seconds"] for r in parts), shards_merged=len(parts))
    if "robust_acc_after" in record:  # counts after each attack: accuracy x images, summed over the shards
        record["robust_acc_after"] = {a: sum(round(r["robust_acc_after"][a] * r["n_eval"]) for r in parts) / n
                                      for a in parts[0]["robust_acc_after"]}
    if "checks" in record:
        record["checks"] = list(dict.fromkeys(m for r in parts for m in r.get("checks", [])))
    return record


def merge(paths: list[str], unit: str) -> tuple[dict, list[dict]]:
    """(records file content, outcome rows) of `unit` from its shards' records files `paths` (outcomes beside)."""
    order = dict(zip(paths, check_shards(paths, unit)))
    paths = sorted(paths, key=lambda p: order[p][0])
    files = [read_json(p) for p in paths]
    _same("evaluation settings", [f["eval_settings"] for f in files], unit)
    _same("inputs (data or checkpoint digests)", [f["inputs"] for f in files], unit)
    _same("cells", [[r["cell"] for r in f["records"]] for f in files], unit)
    outcome_rows = [read_parquet_arrow(layout.outcomes_of(p)).to_pylist() for p in paths]
    records, rows = [], []
    for j, cell in enumerate(r["cell"] for r in files[0]["records"]):
        cell_rows = [row for part in outcome_rows for row in part if row["cell"] == cell]
        records.append(_merge_record([f["records"][j] for f in files], cell_rows, unit))
        rows += cell_rows
    content = {k: v for k, v in files[0].items() if k not in ("records", SELF_DIGEST)}
    return {**content, "records": records}, rows


def run(*, shards: list[str], records_out: str, outcomes_out: str) -> None:
    """The job: merge the shard files into the unit's `records_out` and `outcomes_out`."""
    unit = _unit(records_out)
    content, rows = merge(list(shards), unit)
    write_parquet(outcomes_out, rows)
    write_json(records_out, content)
    log.info("merged %d shards into %s (%d records, %d outcomes)", len(shards), records_out,
             len(content["records"]), len(rows))
