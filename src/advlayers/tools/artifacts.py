"""What `advlayers verify` checks of each kind of artifact (`grid.layout` kinds): one function per kind, each
returning the artifact's own problem (or None) and the inputs it records (their paths and sha256).

An artifact is *corrupt* (unreadable, weights not matching their digest, NaN weights) or *swapped* (a valid
artifact of another net than its path names); whether its inputs changed since is `verify`'s part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..grid import layout


@dataclass(frozen=True)
class Problem:
    """One inconsistent artifact: `path` (relative to the root), `kind` (corrupt, swapped, stale, missing),
    a one-line `detail`, and `target`, the path whose `--forcerun` rebuilds it and everything made from it."""

    path: str
    kind: str
    detail: str
    target: str

    @property
    def command(self) -> str:
        """The command that rebuilds it and everything made from it."""
        return rebuild_command([self.target])


@dataclass
class Checked:
    """What an artifact's own check found: its problem (or None) and the inputs it records."""

    problem: Problem | None = None
    inputs: dict = field(default_factory=dict)


SNAKEMAKE = ("snakemake", "--cores", "all", "all_figures")


def rebuild_command(targets, configfiles=(), cores="all") -> str:
    """`snakemake --cores CORES all_figures [--configfile F ...] --forcerun TARGET ...`: rebuilds the targets and
    everything made from them (the run's config files and cores)."""
    import shlex

    extra = [a for c in configfiles for a in ("--configfile", c)]
    return shlex.join(["snakemake", "--cores", str(cores), "all_figures", *extra, "--forcerun",
                       *sorted(dict.fromkeys(targets))])


def rebuild_target(rel: str) -> str:
    """What `--forcerun` takes to rebuild `rel`: a retrained cell's group folder (its job's output), else itself."""
    found = layout.parse(rel, ("cell",))
    return str(Path(rel).parent) if found else rel


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def problem(rel: str, kind: str, detail: str) -> Checked:
    return Checked(Problem(rel, kind, detail, rebuild_target(rel)))


def swapped(rel: str, expected: dict, found: dict) -> Problem | None:
    """A 'swapped' problem for the first field the artifact holds differently from what its path names."""
    for key, want in expected.items():
        have = found.get(key)
        if have is not None and str(have) != str(want):
            return Problem(rel, "swapped", f"holds {key}={have!r}, its path names {want!r} (a swapped file)",
                           rebuild_target(rel))
    return None


def columns_swapped(rel: str, table, expected: dict) -> Problem | None:
    """A 'swapped' problem when a table's identity columns hold other values than its path names."""
    for key, want in expected.items():
        if key in table and len(table):
            values = set(table[key].astype(str))
            if values != {str(want)}:
                return Problem(rel, "swapped", f"holds {key}={sorted(values)!r}, its path names {want!r} "
                               "(a swapped file)", rebuild_target(rel))
    return None


def _identity(f: dict) -> dict:
    return {k: f[k] for k in ("dataset", "arch", "seed", "pretraining")}


def check_data(root: Path, rel: str, f: dict) -> Checked:
    from ..core.datasets import load_prepared

    try:
        ds = load_prepared(root / rel)
    except Exception as e:
        return problem(rel, "corrupt", one_line(e))
    return Checked(swapped(rel, {"dataset": f["dataset"]}, {"dataset": ds.info.name}))


def _check_checkpoint(root: Path, rel: str, expected: dict) -> Checked:
    from ..core.checkpoints import CheckpointError, read_checkpoint

    try:
        payload = read_checkpoint(root / rel)
    except CheckpointError as e:
        return problem(rel, "corrupt", one_line(e).replace(f"checkpoint {root / rel} ", ""))
    meta = payload.get("meta") or {}
    found = {"dataset": payload.get("dataset"), "arch": payload.get("arch"), "seed": payload.get("seed"),
             "pretraining": meta.get("pretraining"), "cell": meta.get("cell")}
    return Checked(swapped(rel, expected, found), payload.get("inputs") or {})


def check_pretrained(root: Path, rel: str, f: dict) -> Checked:
    return _check_checkpoint(root, rel, {**_identity(f), "cell": "pretrained"})


def check_initial(root: Path, rel: str, f: dict) -> Checked:
    return _check_checkpoint(root, rel, {**_identity(f), "cell": "initial"})


def check_cell(root: Path, rel: str, f: dict) -> Checked:
    return _check_checkpoint(root, rel, {**_identity(f), "cell": f["cell"]})


def _relative(root: Path, path: str) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(p)
    return p.as_posix()


def check_evaluation(root: Path, rel: str, f: dict) -> Checked:
    from ..io import read_json

    data = read_json(root / rel)  # its self-digest: an edited record is corrupt
    for r in data["records"]:
        found = {k: r.get(k) for k in ("dataset", "arch", "seed", "pretraining")}
        bad = swapped(rel, _identity(f), found)
        if bad:
            return Checked(bad)
        if not layout.unit_holds(f["unit"], _relative(root, str(r.get("checkpoint", "")))):
            return Checked(Problem(rel, "swapped", f"holds the evaluation of {r.get('checkpoint')!r}, not of a net "
                                   f"of the {f['pretraining']} net's evaluation {f['unit']} (a swapped file)", rel))
    return Checked(None, data.get("inputs") or {})


def check_outcomes(root: Path, rel: str, f: dict) -> Checked:
    from ..io import read_parquet

    table = read_parquet(root / rel)
    swap = columns_swapped(rel, table, _identity(f))
    if swap:  # another net's outcomes: say so rather than that they do not match the records
        return Checked(swap)
    records_path = layout.path("evaluation", **_identity(f), unit=f["unit"])
    if (root / records_path).is_file():
        try:
            records = json.loads((root / records_path).read_text())["records"]
        except Exception:
            records = None  # the records' own check reports it
        if records is not None:
            want = {(r["pretraining"], r["cell"]): int(r["n_eval"]) for r in records}
            have = table.groupby(["pretraining", "cell"]).size().to_dict() if len(table) else {}
            if {k: int(v) for k, v in have.items()} != want:
                return Checked(Problem(rel, "stale", f"its per-sample outcomes ({len(table)} rows) do not match the "
                                       f"records in {records_path}", rel))
    return Checked(columns_swapped(rel, table, _identity(f)))


def check_activations(root: Path, rel: str, f: dict) -> Checked:
    from ..analyses.features import load_activations

    meta = load_activations(root / rel)["meta"]
    return Checked(swapped(rel, _identity(f), meta), meta.get("inputs") or {})


def check_net_parquet(root: Path, rel: str, f: dict) -> Checked:
    """A per-net parquet file (Fig. 7 rows, an embedding, divergence statistics)."""
    from ..io import read_parquet, read_parquet_metadata

    table = read_parquet(root / rel)
    return Checked(columns_swapped(rel, table, _identity(f)), read_parquet_metadata(root / rel).get("inputs") or {})


def check_table(root: Path, rel: str, f: dict) -> Checked:
    from ..io import read_parquet_arrow, read_parquet_metadata

    read_parquet_arrow(root / rel)
    return Checked(None, read_parquet_metadata(root / rel).get("inputs") or {})


# layout kind -> its check (kinds not listed are not artifacts with something to check: figures and Markdown are
# drawn from checked tables)
CHECKS = {"data": check_data, "pretrained": check_pretrained, "initial": check_initial, "cell": check_cell,
          "evaluation": check_evaluation, "outcomes": check_outcomes, "activations": check_activations,
          "reinit": check_net_parquet, "embedding": check_net_parquet, "divergence": check_net_parquet,
          "table": check_table, "claims_table": check_table}


def check(root: Path, rel: str, kind: str, fields: dict) -> Checked:
    """The check of one artifact; anything unreadable is corrupt, whatever the reader raised."""
    from ..io import ArtifactError

    try:
        return CHECKS[kind](root, rel, fields)
    except ArtifactError as e:  # its own digest: the message names what is wrong
        return problem(rel, "corrupt", one_line(e).replace(f"{root / rel} is corrupt: ", "", 1)
                       .replace(f"{root / rel} ", "", 1))
    except Exception as e:
        return problem(rel, "corrupt", f"unreadable ({type(e).__name__}: {one_line(e)})")
