"""`advlayers verify`: re-check every artifact under results/ against itself and against what it was made from.

    advlayers verify [--root DIR] [--json] [--configfile FILE ...]

Each artifact records how to check it, and every one but the prepared data records the sha256 of the files it
was made from (its *inputs*):

  results/data/<dataset>.pt|json            `datasets.load_prepared` (format, name; a folder set's file lists)
  results/checkpoints/.../{pretrain,init}_<pretraining>.pt, .../retrain_<pretraining>_<batch>/<cell>.pt
                                            the digest of its weights, finite weights, that it is the net its
                                            path names (dataset, arch, seed, pretraining, cell), its inputs
  results/evaluations/.../<net>.json        readable, records of the net its path names, its inputs; the
                                            `.outcomes.parquet` beside it readable and of the same cells
  results/tables/*.parquet, results/reinit/..., results/features/...
                                            readable, of the net its path names, the inputs in their metadata

A problem is *corrupt* (unreadable, weights not matching their digest, NaN weights), *swapped* (a valid artifact
of another net than its path names), *stale* (made from a file that has changed since) or *missing* (a file
that others were made from and that is gone). Each comes with the command that rebuilds it and everything
made from it: ``snakemake --cores all all_figures --forcerun <path>`` (for a retrained cell, its batch folder,
the output of its Snakemake job). An input that changed is assumed fine when it passes its own checks (the
artifact made from it is then the stale one); the prepared data cannot check its own contents, so a changed
data file is itself the problem (it is rebuilt, and everything made from it).

Every file is hashed at most once per run. Prints nothing but ``verified N artifacts: all consistent`` when
clean (status 0), else one line per problem and the command that rebuilds them all (status 1).

The workflow's table rule uses the second half of this module (`table_rebuild_marker`): a table whose parts, or
anything they are made from, went missing (a failed job's outputs, which Snakemake deletes) is rebuilt, with
them, on the next run instead of keeping its old numbers.
"""

# Length: one checker per artifact kind (data, checkpoints, evaluations, outcomes, features, reinit, tables) and
# the table-rebuild helpers the workflow's table rule uses; each is short.

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import grid

PROG = "advlayers verify"
SNAKEMAKE = ("snakemake", "--cores", "all", "all_figures")

_SETTING = r"(?P<dataset>[^/]+)/(?P<arch>[^/]+)/seed(?P<seed>\d+)"
_PATTERNS = [
    ("data", re.compile(r"results/data/(?P<dataset>[^/]+)\.(pt|json)")),
    ("checkpoint", re.compile(rf"results/checkpoints/{_SETTING}/(?P<kind>pretrain|init)_(?P<pretraining>[a-z]+)\.pt")),
    ("cell", re.compile(rf"results/checkpoints/{_SETTING}/retrain_(?P<pretraining>[a-z]+)_(?P<batch>[^/]+)"
                        r"/(?P<cell>[^/]+)\.pt")),
    ("evaluation", re.compile(rf"results/evaluations/{_SETTING}/(?P<net>[^/]+)\.json")),
    ("outcomes", re.compile(rf"results/evaluations/{_SETTING}/(?P<net>[^/]+)\.outcomes\.parquet")),
    ("activations", re.compile(rf"results/features/{_SETTING}/(?P<pretraining>[a-z]+)\.npz")),
    ("net_parquet", re.compile(rf"results/(?:features|reinit)/{_SETTING}/(?P<pretraining>[a-z]+)(?:_\w+)?\.parquet")),
    ("parquet", re.compile(r"results/tables/[^/]+\.parquet")),
]
# Not artifacts with something to check: drawn from checked tables, or Snakemake's own files.
_SKIPPED = (re.compile(r"results/(figures|benchmarks)/.*"), re.compile(r"results/[^/]+\.md"))


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
        return rebuild_command([self.target])

    def line(self, configfiles=()) -> str:
        """'PATH: KIND: DETAIL; rebuild: COMMAND' (what `advlayers verify` prints)."""
        return f"{self.path}: {self.kind}: {self.detail}; rebuild: {rebuild_command([self.target], configfiles)}"


def rebuild_command(targets, configfiles=()) -> str:
    """`snakemake --cores all all_figures [--configfile F ...] --forcerun TARGET ...`: rebuilds the targets and
    everything made from them."""
    extra = [a for c in configfiles for a in ("--configfile", c)]
    return shlex.join([*SNAKEMAKE, *extra, "--forcerun", *sorted(dict.fromkeys(targets))])


def classify(rel: str) -> tuple[str, dict] | None:
    """(kind, path fields) of an artifact path relative to the root; None for anything else."""
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(rel)
        if m:
            return kind, {k: v for k, v in m.groupdict().items() if v is not None}
    return None


def rebuild_target(rel: str) -> str:
    """What `--forcerun` takes to rebuild `rel`: the batch folder of a retrained cell, else the file itself."""
    c = classify(rel)
    return str(Path(rel).parent) if c and c[0] == "cell" else rel


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class _Checked:
    """What an artifact's own check found: its problem (or None) and the inputs it records."""

    problem: Problem | None = None
    inputs: dict = field(default_factory=dict)


class Verifier:
    """One verification run of the artifacts under ROOT/results (`run`); hashes each file at most once."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self._sha: dict[Path, str | None] = {}

    # ------------------------------------------------------------------ helpers

    def file(self, path: str) -> Path:
        """`path` (as recorded: relative to the root, or absolute) on this machine."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def rel(self, path: str | Path) -> str:
        p = Path(path)
        if p.is_absolute():
            try:
                return p.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                return str(p)
        return p.as_posix()

    def sha256(self, path: str | Path) -> str | None:
        """The file's sha256, computed once per run (None if it does not exist)."""
        from .io import sha256_file

        p = self.file(str(path)).resolve()
        if p not in self._sha:
            self._sha[p] = sha256_file(p) if p.is_file() else None
        return self._sha[p]

    def _problem(self, rel, kind, detail):
        return _Checked(Problem(rel, kind, detail, rebuild_target(rel)))

    @staticmethod
    def _mismatch(fields: dict, found: dict) -> str | None:
        """'pretraining='conventional', expected 'adversarial'' for the first field the artifact disagrees on."""
        for key, want in fields.items():
            have = found.get(key)
            if have is not None and str(have) != str(want):
                return f"holds {key}={have!r}, its path names {want!r} (a swapped file)"
        return None

    # ------------------------------------------------------------------ the artifacts

    def check(self, rel: str, kind: str, f: dict) -> _Checked:
        try:
            return getattr(self, f"_check_{kind}")(rel, f)
        except Exception as e:  # anything unreadable is corrupt, whatever the reader raised
            return self._problem(rel, "corrupt", f"unreadable ({type(e).__name__}: {_one_line(e)})")

    def _check_data(self, rel, f):
        from .datasets import load_prepared

        try:
            ds = load_prepared(self.file(rel))
        except Exception as e:
            return self._problem(rel, "corrupt", _one_line(e))
        return _Checked(self._swapped(rel, {"dataset": f["dataset"]}, {"dataset": ds.info.name}))

    def _swapped(self, rel, fields, found):
        why = self._mismatch(fields, found)
        return Problem(rel, "swapped", why, rebuild_target(rel)) if why else None

    def _checkpoint(self, rel, fields):
        from .checkpoints import CheckpointError, read_checkpoint

        try:
            payload = read_checkpoint(self.file(rel))
        except CheckpointError as e:
            detail = _one_line(e).replace(f"checkpoint {self.file(rel)} ", "")
            return self._problem(rel, "corrupt", detail)
        meta = payload.get("meta") or {}
        found = {"dataset": payload.get("dataset"), "arch": payload.get("arch"), "seed": payload.get("seed"),
                 "pretraining": meta.get("pretraining"), "cell": meta.get("cell")}
        return _Checked(self._swapped(rel, fields, found), payload.get("inputs") or {})

    def _check_checkpoint(self, rel, f):
        cell = "pretrained" if f["kind"] == "pretrain" else "init"
        return self._checkpoint(rel, {"dataset": f["dataset"], "arch": f["arch"], "seed": int(f["seed"]),
                                      "pretraining": f["pretraining"], "cell": cell})

    def _check_cell(self, rel, f):
        return self._checkpoint(rel, {"dataset": f["dataset"], "arch": f["arch"], "seed": int(f["seed"]),
                                      "pretraining": f["pretraining"], "cell": f["cell"]})

    @staticmethod
    def _in_unit(checkpoint: Path, cell, pretraining: str, unit: str) -> bool:
        """Whether a record of a batched evaluation (grid.evaluation_units: `cutoff` = the pretrained net and the
        `batch<i>` folders, `analysis` = the `analysis<i>` folders) is of a net that evaluation holds."""
        if cell == "pretrained":
            return unit == "cutoff" and checkpoint.name == f"pretrain_{pretraining}.pt"
        group = "batch" if unit == "cutoff" else "analysis"
        return re.fullmatch(rf"retrain_{pretraining}_{group}\d+", checkpoint.parent.name) is not None

    @staticmethod
    def _net_fields(f):
        kind, pretraining, *batch = f["net"].split("_", 2)
        return kind, pretraining, (batch[0] if batch else None)

    def _check_evaluation(self, rel, f):
        data = json.loads(self.file(rel).read_text())
        records = data["records"]
        kind, pretraining, batch = self._net_fields(f)
        for r in records:
            found = {k: r.get(k) for k in ("dataset", "arch", "seed", "pretraining")}
            if kind == "pretrain":
                found["cell"] = r.get("cell")
            fields = {"dataset": f["dataset"], "arch": f["arch"], "seed": int(f["seed"]), "pretraining": pretraining,
                      **({"cell": "pretrained"} if kind == "pretrain" else {})}
            swapped = self._swapped(rel, fields, found)
            if swapped:
                return _Checked(swapped)
            checkpoint = Path(str(r.get("checkpoint", "")))
            if kind == "retrain" and checkpoint.parent.name != f"retrain_{pretraining}_{batch}":
                return _Checked(Problem(rel, "swapped", f"holds the evaluation of {r.get('checkpoint')!r}, not of a "
                                        f"cell of batch {batch} (a swapped file)", rel))
            if kind == "nets" and not self._in_unit(checkpoint, r.get("cell"), pretraining, batch):
                return _Checked(Problem(rel, "swapped", f"holds the evaluation of {r.get('checkpoint')!r}, not of the "
                                        f"{pretraining} net's {batch} evaluation (a swapped file)", rel))
        return _Checked(None, data.get("inputs") or {})

    def _check_outcomes(self, rel, f):
        import pyarrow.parquet as pq

        table = pq.read_table(self.file(rel)).to_pandas()
        records_path = self.file(rel[: -len(".outcomes.parquet")] + ".json")
        if records_path.is_file():
            try:
                records = json.loads(records_path.read_text())["records"]
            except Exception:
                records = None  # the .json's own check reports it
            if records is not None:
                want = {(r["pretraining"], r["cell"]): int(r["n_eval"]) for r in records}
                have = table.groupby(["pretraining", "cell"]).size().to_dict() if len(table) else {}
                if {k: int(v) for k, v in have.items()} != want:
                    return _Checked(Problem(rel, "stale", f"its per-sample outcomes ({len(table)} rows) do not "
                                            f"match the records in {self.rel(records_path)}", rel))
        _, pretraining, _ = self._net_fields(f)
        return _Checked(self._columns_swapped(rel, table, {"dataset": f["dataset"], "arch": f["arch"],
                                                           "seed": int(f["seed"]), "pretraining": pretraining}))

    def _columns_swapped(self, rel, table, fields):
        for key, want in fields.items():
            if key in table and len(table):
                values = set(table[key].astype(str))
                if values != {str(want)}:
                    return Problem(rel, "swapped", f"holds {key}={sorted(values)!r}, its path names {want!r} "
                                   "(a swapped file)", rebuild_target(rel))
        return None

    def _check_activations(self, rel, f):
        from .features import load_activations

        result = load_activations(self.file(rel))
        meta = result["meta"]
        fields = {"dataset": f["dataset"], "arch": f["arch"], "seed": int(f["seed"]), "pretraining": f["pretraining"]}
        return _Checked(self._swapped(rel, fields, meta), meta.get("inputs") or {})

    def _check_net_parquet(self, rel, f):
        import pyarrow.parquet as pq

        from .io import read_parquet_metadata

        table = pq.read_table(self.file(rel)).to_pandas()
        fields = {"dataset": f["dataset"], "arch": f["arch"], "seed": int(f["seed"]), "pretraining": f["pretraining"]}
        return _Checked(self._columns_swapped(rel, table, fields),
                        read_parquet_metadata(self.file(rel)).get("inputs") or {})

    def _check_parquet(self, rel, f):
        import pyarrow.parquet as pq

        from .io import read_parquet_metadata

        pq.read_table(self.file(rel))
        return _Checked(None, read_parquet_metadata(self.file(rel)).get("inputs") or {})

    # ------------------------------------------------------------------ the run

    def artifacts(self) -> list[tuple[str, str, dict]]:
        results = self.root / "results"
        found = []
        for p in sorted(results.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(results).parts):
                continue  # resume states, rebuild markers, Snakemake's folder timestamps, temporaries
            if any(s.fullmatch(rel) for s in _SKIPPED):
                continue
            c = classify(rel)
            if c:
                found.append((rel, *c))
        return found

    def run(self) -> tuple[int, list[Problem]]:
        artifacts = self.artifacts()
        checked = {rel: self.check(rel, kind, f) for rel, kind, f in artifacts}
        own = {rel: c.problem for rel, c in checked.items() if c.problem}
        problems: dict[str, Problem] = dict(own)
        changed_data: dict[str, list[str]] = {}
        missing: dict[str, list[str]] = {}
        for rel, c in checked.items():
            if rel in own:
                continue
            for role, entry in sorted(c.inputs.items()):
                if not isinstance(entry, dict) or "path" not in entry:
                    continue
                source = self.rel(entry["path"])
                if source in own:
                    continue  # its own problem's rebuild covers this artifact
                now = self.sha256(source)
                if now is None:
                    if source.startswith("results/"):
                        missing.setdefault(source, []).append(rel)
                    elif rel not in problems:
                        problems[rel] = Problem(rel, "stale", f"its input {source} ({role}) no longer exists",
                                                rebuild_target(rel))
                elif now != entry.get("sha256"):
                    kind = classify(source)
                    if kind and kind[0] == "data":
                        changed_data.setdefault(source, []).append(rel)
                    elif rel not in problems:
                        problems[rel] = Problem(rel, "stale", f"its input {source} ({role}) changed since it was "
                                                "made from it", rebuild_target(rel))
        for source, users in missing.items():
            problems.setdefault(source, Problem(source, "missing", f"{len(users)} artifact(s) were made from it, "
                                                f"e.g. {users[0]}", rebuild_target(source)))
        for source, users in changed_data.items():
            problems.setdefault(source, Problem(source, "stale", f"differs from the version {len(users)} artifact(s) "
                                                f"were made from, e.g. {users[0]} (the data cannot check its own "
                                                "contents: rebuild it and everything made from it)",
                                                rebuild_target(source)))
        return len(artifacts), sorted(problems.values(), key=lambda p: p.path)


def verify(root: str | Path = ".") -> list[Problem]:
    """The problems of the artifacts under ROOT/results ([] when all are consistent)."""
    return Verifier(root).run()[1]


def report(n: int, problems: list[Problem], configfiles=()) -> list[str]:
    """The lines `main` prints."""
    if not problems:
        return [f"verified {n} artifacts: all consistent"]
    lines = [p.line(configfiles) for p in problems]
    lines.append(f"verified {n} artifacts: {len(problems)} problem(s); to rebuild them all and everything made from "
                 f"them: {rebuild_command([p.target for p in problems], configfiles)}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Re-hash every artifact under ROOT/results and check it against the files it was "
        "made from; print each problem with the command that rebuilds it (status 1), or one line when all are "
        "consistent (status 0).")
    parser.add_argument("--root", default=".", metavar="DIR", help="the workflow's working directory (.)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--configfile", action="append", default=[], metavar="FILE",
                        help="config file(s) the run used, repeated in the printed commands")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    if not (root / "results").is_dir():
        print(f"advlayers: error: {root / 'results'} does not exist: nothing to verify (--root is the folder "
              "the workflow ran in)", file=sys.stderr)
        return 2
    n, problems = Verifier(root).run()
    if args.json:
        print(json.dumps({"artifacts": n, "consistent": not problems,
                          "problems": [{**asdict(p), "command": rebuild_command([p.target], args.configfile)}
                                       for p in problems],
                          "command": rebuild_command([p.target for p in problems], args.configfile)
                          if problems else None}, indent=1))
    else:
        print("\n".join(report(n, problems, args.configfile)))
    return 1 if problems else 0


# --------------------------------------------------------------------------- the workflow's table rule
# Snakemake does not rerun a job for a missing input when its output looks up to date: after a failed evaluation
# (whose outputs Snakemake deletes) the next run says "Nothing to be done" and the tables keep the old numbers.
# So each table lists its parts, everything they are made from (as `ancient` inputs: their dates never rerun the
# table, only their absence does) and a rebuild marker, results/.rebuild/<table>.txt (made empty by a rule on a
# fresh run). While Snakemake builds the DAG, a table that exists while one of those files is missing gets new
# marker contents (a new checksum and a newer date): the marker is then an updated input, the table job runs,
# and with it every job that makes the missing files (and the jobs between them and the table). With nothing
# missing the marker is left as it is: "Nothing to be done". A dry run writes the marker too, so that it shows
# the jobs the run would do (the marker is no result: that is all it changes).

REBUILD_MARKER = "results/.rebuild/{table}.txt"
_rebuild_requested: set[tuple[str, str]] = set()


def table_parts(config: dict, table: str) -> list[str]:
    """The files a table is gathered from: evaluation records (per-sample outcomes for `outcomes`) or per-net
    parquet files."""
    return grid.table_inputs(config, table)


def made_from(config: dict) -> dict[str, list[str]]:
    """{part of a table: the artifacts it is made from, transitively} of a config (from the grid)."""
    out: dict[str, list[str]] = {}
    for s in grid.settings(config):
        for net, members in grid.evaluation_units(config, s).items():
            nets = [grid.pretrained_path(s) if m == "pretrain" else grid.batch_dir(s, m) for m in members]
            for path in grid.evaluation_paths(s, net):
                out[path] = nets + [grid.pretrained_path(s)] * ("pretrain" not in members) + [grid.data_path(s.dataset)]
    for s in grid.autoattack_settings(config):  # AutoAttack of the pretrained net and some cells
        nets = {grid.pretrained_path(s) if c == "pretrained" else grid.batch_dir(s, grid.batch_of(config, s, c))
                for c in grid.autoattack_cells(config, s)}
        for path in grid.autoattack_paths(s):
            out[path] = sorted({*nets, grid.pretrained_path(s), grid.data_path(s.dataset)})
    for s in grid.reinit_settings(config):
        out[grid.reinit_path(s)] = [grid.pretrained_path(s), grid.initial_path(s), grid.data_path(s.dataset)]
    for s in grid.feature_settings(config):
        out[grid.features_path(s, "_divergence")] = [grid.features_path(s), grid.pretrained_path(s),
                                                     grid.data_path(s.dataset)]
    return out


def table_upstream(config: dict, table: str) -> list[str]:
    """What a table's parts are made from (the table rule's `ancient` inputs)."""
    up = made_from(config)
    return sorted({p for part in table_parts(config, table) for p in up.get(part, ())})


def table_rebuild_marker(config: dict, table: str, root: str | os.PathLike = ".") -> str:
    """The table's rebuild marker (relative to `root`, the working directory). Rewritten (once per process)
    when the table exists while one of its parts or what they are made from is missing; otherwise untouched
    (a fresh run makes an empty one with the workflow's `table_rebuild_marker` rule)."""
    from .io import atomic_write

    root = Path(root)
    marker = REBUILD_MARKER.format(table=table)
    key = (str(root.resolve()), table)
    if key in _rebuild_requested or not (root / grid.table_path(table)).exists():
        return marker
    # only what the existing table was made from counts: a part it recorded that is gone now (a failed
    # evaluation), or what such a part was made from (a deleted batch folder); a part the config adds is not
    # recorded, and the table reruns for it anyway
    from .io import read_parquet_metadata

    try:
        recorded = set(read_parquet_metadata(root / grid.table_path(table)).get("inputs", {}))
    except Exception:  # an unreadable table: rebuild it
        recorded = set(table_parts(config, table))
    up = made_from(config)
    parts = [p for p in table_parts(config, table) if p in recorded]
    missing = [p for p in parts if not (root / p).exists()]
    missing += sorted({u for p in parts if (root / p).exists() for u in up.get(p, ()) if not (root / u).exists()})
    if missing:
        _rebuild_requested.add(key)
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
    return marker


if __name__ == "__main__":
    sys.exit(main())
