"""The table rule's rebuild markers: a table whose parts, or what they are made from, went missing is rebuilt.

Snakemake does not rerun a job for a missing input when its output looks up to date: after a failed evaluation
(whose outputs Snakemake deletes) the next run would say "Nothing to be done" and the tables keep the old
numbers. So each table lists its parts, everything they are made from (as `ancient` inputs: their dates never
rerun the table, only their absence does) and a rebuild marker (`layout` "rebuild_marker", made empty by a rule
on a fresh run). While Snakemake builds the DAG, a table that exists while one of those files is missing gets new
marker contents (a new checksum and a newer date): the marker is then an updated input, the table job runs, and
with it every job that makes the missing files (and the jobs between them and the table). With nothing missing
the marker is left as it is: "Nothing to be done". A dry run writes the marker too, so that it shows the jobs the
run would do (the marker is no result: that is all it changes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import layout, plan

_requested: set[tuple[str, str]] = set()


def _recorded_inputs(table_file: Path) -> set[str] | None:
    """The parts a table file recorded it was made from (parquet metadata), or None when it is unreadable."""
    try:
        import pyarrow.parquet as pq

        raw = (pq.read_schema(table_file).metadata or {}).get(b"advlayers")
        return set(json.loads(raw).get("inputs", {})) if raw else set()
    except Exception:  # an unreadable table: rebuild it
        return None


def missing_inputs(config: dict, table: str, root: str | os.PathLike = ".") -> list[str]:
    """What an existing table was made from that is gone now: a part it recorded (a failed evaluation), or what
    such a part was made from (a deleted group folder). A part the config adds is not recorded: the table reruns
    for it anyway."""
    root = Path(root)
    recorded = _recorded_inputs(root / layout.table_path(table))
    parts = plan.table_inputs(config, table)
    if recorded is not None:
        parts = [p for p in parts if p in recorded]
    up = made_from(config)
    missing = [p for p in parts if not (root / p).exists()]
    missing += sorted({u for p in parts if (root / p).exists() for u in up.get(p, ()) if not (root / u).exists()})
    return missing


def table_rebuild_marker(config: dict, table: str, root: str | os.PathLike = ".") -> str:
    """The table's rebuild marker (relative to `root`, the working directory). Rewritten (once per process)
    when the table exists while one of its parts or what they are made from is missing; otherwise untouched."""
    root = Path(root)
    marker = layout.path("rebuild_marker", table=table)
    if (str(root.resolve()), marker) not in _requested and (root / layout.table_path(table)).exists():
        _request(root, marker, missing_inputs(config, table, root))
    return marker


def group_rebuild_marker(config: dict, setting, group: str, root: str | os.PathLike = ".") -> list[str]:
    """A retraining job's rebuild marker, as its input list: written (once per process) when its group folder
    exists but lacks the checkpoint of one of its cells (deleted by hand: Snakemake dates the folder, not its
    files), so that the job runs again and with it everything made from the folder. No rule makes it: it is an
    input only once it exists ([] before: a fresh run has no marker job per group), and then keeps its date."""
    root = Path(root)
    marker = layout.group_rebuild_marker(setting, group)
    if (str(root.resolve()), marker) not in _requested and (root / layout.group_dir(setting, group)).is_dir():
        _request(root, marker, [layout.cell_path(setting, group, c) for c in plan.group_cells(config, setting, group)
                                if not (root / layout.cell_path(setting, group, c)).is_file()])
    return [marker] if (root / marker).is_file() else []


def _request(root: Path, marker: str, missing: list[str]) -> None:
    """Rewrite `marker` (new contents, a newer date) when something is `missing`."""
    from ..io import atomic_write

    if missing:
        _requested.add((str(root.resolve()), marker))
        try:
            atomic_write(root / marker, f"rebuild requested at {time.time_ns()}: {len(missing)} input(s) missing\n"
                         + "".join(f"{p}\n" for p in missing))
        except OSError as e:
            message = f"cannot write {marker} ({e.strerror or e}): the workflow needs a writable results folder"
            try:  # a one-line error in Snakemake's report, like the config errors
                from snakemake.exceptions import WorkflowError
            except ImportError:
                raise OSError(message) from None
            raise WorkflowError(message) from None


def made_from(config: dict) -> dict[str, list[str]]:
    """{part of a table: the artifacts it is made from, transitively} of a config."""
    out: dict[str, list[str]] = {}
    for s in plan.settings(config):
        units = list(plan.evaluation_units(config, s))
        units += [layout.AUTOATTACK_UNIT] if plan.autoattack_cells(config, s) else []
        for unit in units:
            nets = plan.evaluated_job_outputs(config, s, unit)
            for part in layout.evaluation_paths(s, unit):
                out[part] = sorted({*nets, layout.pretrained_path(s), layout.data_path(s.dataset)})
    for s in plan.reinit_settings(config):
        out[layout.reinit_path(s)] = [layout.pretrained_path(s), layout.initial_path(s), layout.data_path(s.dataset)]
    for s in plan.feature_settings(config):
        out[layout.divergence_path(s)] = [layout.activations_path(s), layout.pretrained_path(s),
                                          layout.data_path(s.dataset)]
    return out


def table_upstream(config: dict, table: str) -> list[str]:
    """What a table's parts are made from (the table rule's `ancient` inputs)."""
    up = made_from(config)
    return sorted({p for part in plan.table_inputs(config, table) for p in up.get(part, ())})
