"""`advlayers verify`: re-check every artifact under results/ against itself and against what it was made from.

    advlayers verify [--root DIR] [--json] [--configfile FILE ...]

Each artifact records how to check it, and every one but the prepared data records the sha256 of the files it
was made from (its *inputs*):

  prepared data                             `core.datasets.load_prepared` (format, name; a folder set's file lists)
  checkpoints (pretrained, initial, cells)  the digest of its weights, finite weights, that it is the net its
                                            path names (dataset, arch, seed, pretraining, cell), its inputs
  evaluations (records, outcomes)           readable, records of the nets its path names, its inputs; the
                                            outcomes beside them readable and of the same cells
  tables, Fig. 7 and Fig. 8 files           readable, of the net its path names, the inputs in their metadata

(paths: `grid.layout`; what each check does: `tools.artifacts`).

A problem is *corrupt* (unreadable, weights not matching their digest, NaN weights), *swapped* (a valid artifact
of another net than its path names), *stale* (made from a file that has changed since) or *missing* (a file
that others were made from and that is gone). Each comes with the command that rebuilds it and everything
made from it: ``snakemake --cores all all_figures --forcerun <path>`` (for a retrained cell, its group folder,
the output of its Snakemake job). An input that changed is assumed fine when it passes its own checks (the
artifact made from it is then the stale one); the prepared data cannot check its own contents, so a changed
data file is itself the problem (it is rebuilt, and everything made from it).

Every file is hashed at most once per run. Prints nothing but ``verified N artifacts: all consistent`` when
clean (status 0), else one line per problem and the command that rebuilds them all (status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..grid import layout
from .artifacts import Problem, check, rebuild_command, rebuild_target

PROG = "advlayers verify"
CHECKED_KINDS = ("data", "pretrained", "initial", "cell", "evaluation", "outcomes", "activations", "reinit",
                 "embedding", "divergence", "claims_table", "table")


def problem_line(p: Problem, configfiles=(), cores="all") -> str:
    """'PATH: KIND: DETAIL; rebuild: COMMAND' (what `advlayers verify` prints)."""
    return f"{p.path}: {p.kind}: {p.detail}; rebuild: {rebuild_command([p.target], configfiles, cores)}"


def load_configs(paths, root: Path) -> dict | None:
    """The run's config as Snakemake merges its `--configfile`s (later files override keys of earlier ones), the
    schema's defaults filled in; None when none is named (then no artifact is known to be missing)."""
    from ..grid import validate

    def merge(base: dict, over: dict) -> dict:
        for k, v in over.items():
            base[k] = merge(dict(base[k]), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return base

    if not paths:
        return None
    paths = [root / p if not Path(p).is_absolute() else Path(p) for p in paths]
    if not all(p.is_file() for p in paths):
        raise validate.ConfigError(f"config file {next(p for p in paths if not p.is_file())} does not exist")
    config: dict = {}
    for p in paths:
        content = validate.read_yaml(p) or {}
        if not isinstance(content, dict):
            raise validate.ConfigError(f"config file {p} does not hold a mapping of config keys")
        config = merge(config, content)
    validate.apply_schema(config)
    validate.check(config)
    return config


def expected_artifacts(config: dict) -> list[str]:
    """Every file the config's `all_figures` makes (`tools.preflight.expected_outputs`: checkpoints, evaluations,
    per-net parts, tables, figures, claims; and what the figures are drawn from: the per-dataset tables), rebuild
    markers left out."""
    from ..grid import plan
    from .preflight import expected_outputs

    found = {p for rule, files in expected_outputs(config).items() if not rule.endswith("rebuild_marker")
             for p in files}
    return sorted(found | {p for stem in plan.figures(config) for p in plan.figure_inputs(config, stem)})


class Verifier:
    """One verification run of the artifacts under ROOT/results (`run`); hashes each file at most once. With the
    run's `config`, every artifact it implies that does not exist is a problem too (missing)."""

    def __init__(self, root: str | Path = ".", config: dict | None = None):
        self.root = Path(root)
        self.config = config
        self._sha: dict[Path, str | None] = {}

    def rel(self, path: str | Path) -> str:
        """A recorded path (relative to the root, or absolute) relative to the root."""
        p = Path(path)
        if p.is_absolute():
            try:
                return p.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                return str(p)
        return p.as_posix()

    def sha256(self, rel: str) -> str | None:
        """The file's sha256, computed once per run (None if it does not exist)."""
        from ..io import sha256_file

        p = (self.root / rel).resolve()
        if p not in self._sha:
            self._sha[p] = sha256_file(p) if p.is_file() else None
        return self._sha[p]

    def artifacts(self) -> list[tuple[str, str, dict]]:
        """(path, kind, fields) of every artifact under results/ (hidden files: resume states, markers, temporaries)."""
        results, found = self.root / layout.RESULTS, []
        for p in sorted(results.rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(results).parts):
                continue
            rel = p.relative_to(self.root).as_posix()
            parsed = layout.parse(rel, CHECKED_KINDS)
            if parsed:
                found.append((rel, *parsed))
        return found

    def _input_problems(self, rel: str, inputs: dict, own: dict, missing: dict, changed_data: dict):
        """The artifact's stale inputs (a problem of its own), or missing / changed data inputs (collected)."""
        for role, entry in sorted(inputs.items()):
            if not isinstance(entry, dict) or "path" not in entry:
                continue
            source = self.rel(entry["path"])
            if source in own:
                continue  # its own problem's rebuild covers this artifact
            now = self.sha256(source)
            if now is None:
                if source.startswith(f"{layout.RESULTS}/"):
                    missing.setdefault(source, []).append(rel)
                    continue
                return Problem(rel, "stale", f"its input {source} ({role}) no longer exists", rebuild_target(rel))
            if now != entry.get("sha256"):
                if layout.parse(source, ("data",)):
                    changed_data.setdefault(source, []).append(rel)
                    continue
                return Problem(rel, "stale", f"its input {source} ({role}) changed since it was made from it",
                               rebuild_target(rel))
        return None

    def run(self) -> tuple[int, list[Problem]]:
        artifacts = self.artifacts()
        checked = {rel: check(self.root, rel, kind, f) for rel, kind, f in artifacts}
        own = {rel: c.problem for rel, c in checked.items() if c.problem}
        problems: dict[str, Problem] = dict(own)
        missing: dict[str, list[str]] = {}
        changed_data: dict[str, list[str]] = {}
        for rel, c in checked.items():
            if rel not in own:
                stale = self._input_problems(rel, c.inputs, own, missing, changed_data)
                if stale:
                    problems[rel] = stale
        for source in expected_artifacts(self.config) if self.config else []:
            if not (self.root / source).exists():
                missing.setdefault(source, [])
        for source, users in missing.items():
            made = f"{len(users)} artifact(s) were made from it, e.g. {users[0]}" if users else "the config implies it"
            problems.setdefault(source, Problem(source, "missing", made, rebuild_target(source)))
        for source, users in changed_data.items():
            problems.setdefault(source, Problem(source, "stale", f"differs from the version {len(users)} artifact(s) "
                                                f"were made from, e.g. {users[0]} (the data cannot check its own "
                                                "contents: rebuild it and everything made from it)",
                                                rebuild_target(source)))
        return len(artifacts), sorted(problems.values(), key=lambda p: p.path)


def verify(root: str | Path = ".") -> list[Problem]:
    """The problems of the artifacts under ROOT/results ([] when all are consistent)."""
    return Verifier(root).run()[1]


def report(n: int, problems: list[Problem], configfiles=(), cores="all") -> list[str]:
    """The lines `main` prints."""
    if not problems:
        return [f"verified {n} artifacts: all consistent"]
    lines = [problem_line(p, configfiles, cores) for p in problems]
    lines.append(f"verified {n} artifacts: {len(problems)} problem(s); to rebuild them all and everything made from "
                 f"them: {rebuild_command([p.target for p in problems], configfiles, cores)}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Re-hash every artifact under ROOT/results and check it against the files it was "
        "made from; print each problem with the command that rebuilds it (status 1), or one line when all are "
        "consistent (status 0).")
    parser.add_argument("--root", default=".", metavar="DIR", help="the workflow's working directory (.)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--configfile", action="append", default=[], metavar="FILE",
                        help="config file(s) the run used: the artifacts they imply that are missing are listed too, "
                        "and the printed commands repeat them (`snakemake verify` passes the run's)")
    parser.add_argument("--cores", default="all", help="cores of the printed commands (all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    if not (root / "results").is_dir():
        print(f"advlayers: error: {root / 'results'} does not exist: nothing to verify (--root is the folder "
              "the workflow ran in)", file=sys.stderr)
        return 2
    from ..grid.vocabulary import ConfigError

    try:
        config = load_configs(args.configfile, root)
    except (ConfigError, OSError, ValueError) as e:
        print(f"advlayers: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    n, problems = Verifier(root, config).run()
    if args.json:
        print(json.dumps({"artifacts": n, "consistent": not problems,
                          "problems": [{**asdict(p), "command": rebuild_command([p.target], args.configfile, args.cores)}
                                       for p in problems],
                          "command": rebuild_command([p.target for p in problems], args.configfile, args.cores)
                          if problems else None}, indent=1))
    else:
        print("\n".join(report(n, problems, args.configfile, args.cores)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
