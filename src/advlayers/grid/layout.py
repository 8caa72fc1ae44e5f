"""Where every artifact lives and what every id looks like: the one definition (standard library only).

The rules' outputs (`pattern`), the paths the grid expands a config to (`path`), and `verify`'s reading of a
file it finds (`parse`) all come from `PATTERNS` below; ids (table and figure stems, evaluation units, retraining
groups) are built and taken apart only by the functions here.

    results/data/<dataset>.pt|json                                           prepared data
    results/checkpoints/<dataset>/<arch>/seed<S>/<pretraining>/pretrained.pt  a pretrained net
    results/checkpoints/<dataset>/<arch>/seed<S>/<pretraining>/initial.pt     its epoch-0 weights (Fig. 7's rewind)
    results/checkpoints/<dataset>/<arch>/seed<S>/<pretraining>_then_<retraining>/<group>/<cell>.pt
                                                                              a retrained cell (the folder: one job)
    results/evaluations/<dataset>/<arch>/seed<S>/<pretraining>/<unit>.json    an evaluation job's records
    results/evaluations/.../<unit>.outcomes.parquet                           ... and per-sample outcomes
    results/reinit/<dataset>/<arch>/seed<S>/<pretraining>.parquet             Fig. 7 rows of one net
    results/features/<dataset>/<arch>/seed<S>/<pretraining>.npz               Fig. 8 activation vectors
    results/features/.../<pretraining>_<method>.parquet, ..._divergence.parquet   their embedding, statistics
    results/tables/<table>.parquet (+ .html), results/figures/<figure>.png|pdf, results/claims.md, ...

An evaluation *unit* is what one evaluation job evaluates (`plan.evaluation_units`): `pretrained`, a retraining
group `retrained_<group>`, with grouping the pretrained net and its cut-off groups `cutoff_nets` and the
analysis groups `analysis_nets`, or `autoattack`; a long one is split into shards (`<unit>-s<i>of<k>`, each
a slice of the test images) whose files are merged into the unit's.
"""

from __future__ import annotations

import re

from .vocabulary import EMBED_METHODS, PRETRAININGS, ConfigError, Setting, check, is_folder_dataset

RESULTS = "results"
_NET = "{dataset}/{arch}/seed{seed}"
PATTERNS = {
    "data": "results/data/{dataset}.{ext}",
    "data_cache": "results/data/{dataset}.cache",  # a folder dataset's decoded-image cache (`core.decode_cache`)
    "pretrained": f"results/checkpoints/{_NET}/{{pretraining}}/pretrained.pt",
    "initial": f"results/checkpoints/{_NET}/{{pretraining}}/initial.pt",
    "group": f"results/checkpoints/{_NET}/{{pretraining}}_then_{{retraining}}/{{group}}",
    "cell": f"results/checkpoints/{_NET}/{{pretraining}}_then_{{retraining}}/{{group}}/{{cell}}.pt",
    "evaluation": f"results/evaluations/{_NET}/{{pretraining}}/{{unit}}.json",
    "outcomes": f"results/evaluations/{_NET}/{{pretraining}}/{{unit}}.outcomes.parquet",
    "reinit": f"results/reinit/{_NET}/{{pretraining}}.parquet",
    "activations": f"results/features/{_NET}/{{pretraining}}.npz",
    "embedding": f"results/features/{_NET}/{{pretraining}}_{{method}}.parquet",
    "divergence": f"results/features/{_NET}/{{pretraining}}_divergence.parquet",
    "table": "results/tables/{table}.parquet",
    "table_html": "results/tables/{table}.html",
    "figure": "results/figures/{figure}.{ext}",
    "claims_table": "results/tables/claims.parquet",
    "claims": "results/claims.md",
    "claims_html": "results/claims.html",
    "cutoff_claims": "results/claims/cutoff_{dataset}.md",
    "state": f"results/.state/{_NET}",
    "rebuild_marker": "results/.rebuild/{table}.txt",
    "group_rebuild_marker": f"results/.rebuild/checkpoints/{_NET}/{{pretraining}}_then_{{retraining}}/{{group}}.txt",
    "preflight": "results/preflight.md",
    "throughput": "results/throughput.yaml",
}
# What each wildcard matches (Snakemake's wildcard_constraints and `parse`).
FIELDS = {
    "dataset": r"[A-Za-z0-9][\w.-]*",
    "arch": r"[A-Za-z0-9][\w.-]*",
    "seed": r"\d+",
    "pretraining": "|".join(PRETRAININGS),
    "retraining": "|".join(PRETRAININGS),
    "group": r"m[01][01]+|l\d+-\d+|cutoff\d+|analysis\d+",
    "cell": r"m[01][01]+|l\d+-\d+",
    "unit": r"(?:pretrained|retrained_(?:m[01][01]+|l\d+-\d+|cutoff\d+|analysis\d+)|cutoff_nets|analysis_nets|autoattack)"
            r"(?:-s\d+of\d+)?",
    "method": "|".join(EMBED_METHODS),
    "ext": r"pt|json|png|pdf",
    "table": r"[a-z][\w-]*",
    "figure": r"[a-z][\w-]*",
}
FIGURE_EXTENSIONS = ("png", "pdf")


def pattern(kind: str) -> str:
    """A path with Snakemake wildcards ({dataset}, ...): a rule's output."""
    return PATTERNS[kind]


def path(kind: str, **fields) -> str:
    """The path of one artifact."""
    return PATTERNS[kind].format(**fields)


def _regex(kind: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", PATTERNS[kind])
    out, seen = [], set()
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        elif part in seen:
            out.append(f"(?P={part})")
        else:
            seen.add(part)
            out.append(f"(?P<{part}>{FIELDS[part]})")
    return re.compile("".join(out))


_REGEXES = {kind: _regex(kind) for kind in PATTERNS}


def parse(rel: str, kinds=None) -> tuple[str, dict] | None:
    """(kind, fields) of a path relative to the working directory, or None; seed is an int."""
    for kind in kinds or PATTERNS:
        m = _REGEXES[kind].fullmatch(rel)
        if m:
            fields = m.groupdict()
            if "seed" in fields:
                fields["seed"] = int(fields["seed"])
            if "retraining" in fields and fields["retraining"] == fields["pretraining"]:
                continue  # a net is always retrained in the opposite mode
            return kind, fields
    return None


def setting_of(fields: dict) -> Setting:
    return Setting(fields["dataset"], fields["arch"], int(fields["seed"]), fields["pretraining"])


# --------------------------------------------------------------------------- the nets and their evaluations


def _net(s: Setting) -> dict:
    return {"dataset": s.dataset, "arch": s.arch, "seed": s.seed, "pretraining": s.pretraining}


def data_path(dataset: str) -> str:
    return path("data", dataset=dataset, ext="json" if is_folder_dataset(dataset) else "pt")


def pretrained_path(s: Setting) -> str:
    return path("pretrained", **_net(s))


def initial_path(s: Setting) -> str:
    """The epoch-0 weights pretraining started from (Fig. 7's rewind source)."""
    return path("initial", **_net(s))


def group_dir(s: Setting, group: str) -> str:
    """The folder of one retraining job's cells (the job's output)."""
    return path("group", **_net(s), retraining=s.retraining, group=group)


def group_rebuild_marker(s: Setting, group: str) -> str:
    """The retraining job's rebuild marker (`grid.rebuild`): rewritten when its folder lacks a cell."""
    return path("group_rebuild_marker", **_net(s), retraining=s.retraining, group=group)


def cell_path(s: Setting, group: str, cell: str) -> str:
    return path("cell", **_net(s), retraining=s.retraining, group=group, cell=cell)


def state_dir(s_or_fields) -> str:
    """Resume states of a setting's training jobs: outside their outputs, which Snakemake deletes when a job fails."""
    f = s_or_fields if isinstance(s_or_fields, dict) else _net(s_or_fields)
    return path("state", dataset=f["dataset"], arch=f["arch"], seed=f["seed"])


def pretrain_state(s: Setting) -> str:
    return f"{state_dir(s)}/pretrained_{s.pretraining}.pt"


def retrain_state(s: Setting, cell: str) -> str:
    return f"{state_dir(s)}/{s.pretraining}_then_{s.retraining}_{cell}.pt"


def evaluation_paths(s: Setting, unit: str) -> tuple[str, str]:
    """(records .json, per-sample outcomes .parquet) of one evaluation job."""
    return path("evaluation", **_net(s), unit=unit), path("outcomes", **_net(s), unit=unit)


def outcomes_of(records_path: str) -> str:
    """The per-sample outcomes beside an evaluation's records."""
    if not records_path.endswith(".json"):
        raise ValueError(f"{records_path} is not an evaluation's records file")
    return records_path[: -len(".json")] + ".outcomes.parquet"


PRETRAINED_UNIT, AUTOATTACK_UNIT = "pretrained", "autoattack"
_SHARD = r"-s\d+of\d+"
# the units the figures' evaluation (PGD) makes, and AutoAttack's, each whole or one shard
PGD_UNITS = FIELDS["unit"].replace("|autoattack)", ")")
AUTOATTACK_UNITS = f"autoattack(?:{_SHARD})?"


def shard_unit(unit: str, index: int, shards: int) -> str:
    """Shard `index` (0-based) of `shards` of an evaluation unit, e.g. 'autoattack-s0of3' (`grid.sharding`)."""
    if not 0 <= index < shards or unit_shard(unit) is not None:
        raise ValueError(f"no shard {index} of {shards} of unit {unit!r}")
    return f"{unit}-s{index}of{shards}"


def unit_shard(unit: str) -> tuple[str, int, int] | None:
    """(whole unit, shard index, shards) of a shard's unit; None for a whole unit."""
    m = re.fullmatch(r"(.+)-s(\d+)of(\d+)", unit)
    if m is None:
        return None
    whole, index, shards = m.group(1), int(m.group(2)), int(m.group(3))
    if not 0 <= index < shards:
        raise ValueError(f"unit {unit!r}: shard index {index} is not below its count {shards}")
    return whole, index, shards


def whole_unit(unit: str) -> str:
    """The unit a shard belongs to (a whole unit itself)."""
    return unit if unit_shard(unit) is None else unit_shard(unit)[0]
GROUPED_UNITS = {"cutoff": "cutoff_nets", "analysis": "analysis_nets"}  # with grouping: one job per kind of group


def retrained_unit(group: str) -> str:
    return f"retrained_{group}"


def unit_group(unit: str) -> str | None:
    """The retraining group of a `retrained_<group>` unit (None for the others)."""
    return unit[len("retrained_"):] if unit.startswith("retrained_") else None


def unit_holds(unit: str, checkpoint: str) -> bool:
    """Whether an evaluation unit (of the same setting) evaluates the net in `checkpoint` (a path relative to the
    working directory): `pretrained` the pretrained file, `retrained_<group>` that group's cells, `cutoff_nets`
    the pretrained file and the `cutoff<i>` groups, `analysis_nets` the `analysis<i>` groups, `autoattack` any."""
    found = parse(checkpoint, ("pretrained", "cell"))
    if found is None:
        return False
    kind, fields = found
    unit = whole_unit(unit)
    if unit == AUTOATTACK_UNIT:
        return True
    if unit == PRETRAINED_UNIT:
        return kind == "pretrained"
    if unit_group(unit) is not None:
        return kind == "cell" and fields["group"] == unit_group(unit)
    if unit == GROUPED_UNITS["cutoff"]:
        return kind == "pretrained" or group_kind(fields["group"]) == "cutoff"
    return kind == "cell" and group_kind(fields["group"]) == "analysis"


def reinit_path(s: Setting) -> str:
    return path("reinit", **_net(s))


def activations_path(s: Setting) -> str:
    return path("activations", **_net(s))


def embedding_path(s: Setting, method: str) -> str:
    return path("embedding", **_net(s), method=method)


def divergence_path(s: Setting) -> str:
    return path("divergence", **_net(s))


NET_JOB = f"{_NET}/{{pretraining}}"  # the wildcards of a job on one pretrained net, as a path
# Each rule's job as a path of its wildcards: its log's and benchmark file's name, and its name in `cost`.
JOBS = {"pretrain": NET_JOB, "import_pretrained": NET_JOB, "retrain": f"{NET_JOB}_then_{{retraining}}/{{group}}", "evaluate": f"{NET_JOB}/{{unit}}",
        "evaluate_autoattack": f"{NET_JOB}/{{unit}}", "merge_shards": f"{NET_JOB}/{{unit}}", "reinit": NET_JOB, "sample_features": NET_JOB,
        "embed_features": f"{NET_JOB}_{{method}}", "feature_divergence": NET_JOB}


def job_id(s: Setting) -> str:
    """A job on one pretrained net as a path (its log's and benchmark file's name)."""
    return NET_JOB.format(**_net(s))


def job_name(rule: str, s: Setting, **fields) -> str:
    """One job of a per-net rule as a path (`JOBS`), e.g. job_name("evaluate", s, unit="pretrained")."""
    return JOBS[rule].format(**_net(s), retraining=s.retraining, **fields)


def log_path(rule: str, job: str) -> str:
    """A job's log; `job` is the rule's wildcards as a path (`NET_JOB`, or a pattern with wildcards)."""
    return f"logs/{rule}/{job}.log"


def benchmark_path(rule: str, job: str) -> str:
    return f"results/benchmarks/{rule}/{job}.tsv"


# --------------------------------------------------------------------------- retraining groups


def group_id(kind: str, index: int) -> str:
    """With grouping: 'cutoff<i>' (the cut-off figure's cells) or 'analysis<i>' (cells only Fig. 5/6 need)."""
    check("group kind", kind, tuple(GROUPED_UNITS))
    return f"{kind}{index}"


def group_kind(group: str) -> str | None:
    """'cutoff' / 'analysis' of a grouped id; None for a single cell's group (its id is the cell's)."""
    m = re.fullmatch(r"(cutoff|analysis)\d+", group)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- tables, figures, claims

TABLES = ("cutoff", "layer_cutoff", "module_subsets", "reinit", "feature_divergence", "outcomes", "robustness_gap",
          "training_curves")
FIGURE_TARGETS = {"fig5": "layer_cutoff", "fig6": "module_subsets", "fig7": "reinit", "fig8": "features"}
CUTOFF_FIGURES = ("fig2", "fig3", "fig4")  # the cut-off figure of one dataset each (config `figures`)
DIVERGENCE_FIGURE = "feature_divergence"
TRAINING_CURVES = "training_curves"  # the per-epoch records of every trained net: a table and a figure


def table_path(table: str) -> str:
    return path("table", table=table)


def table_html_path(table: str) -> str:
    return path("table_html", table=table)


def cutoff_table(dataset: str) -> str:
    """The per-dataset view of the cut-off table (what a dataset's cut-off figure reads, so that `snakemake fig2`
    computes that dataset only)."""
    return f"cutoff_{dataset}"


def table_kind(table: str) -> str:
    """'cutoff' for a per-dataset view, else the table's own name."""
    return "cutoff" if table.startswith("cutoff_") else table


def table_dataset(table: str) -> str | None:
    """The dataset of a per-dataset view ('cutoff_<dataset>'), else None."""
    return table.split("_", 1)[1] if table.startswith("cutoff_") else None


def table_names_pattern(datasets) -> str:
    """Wildcard constraint of table names: the tables and the per-dataset cut-off views."""
    return "|".join([*TABLES, *(cutoff_table(d) for d in datasets)])


def cutoff_figure(dataset: str) -> str:
    return f"cutoff_{dataset}"


def embedding_figure(method: str) -> str:
    return f"features_{method}"


def figure_kind(figure: str) -> str:
    """What a figure stem draws: 'cutoff', 'features' (an embedding method's panels) or the analysis's table."""
    if figure.startswith("cutoff_"):
        return "cutoff"
    if figure.startswith("features_"):
        return "features"
    return figure


def figure_dataset(figure: str) -> str | None:
    return figure.split("_", 1)[1] if figure.startswith("cutoff_") else None


def figure_method(figure: str) -> str | None:
    return figure.split("_", 1)[1] if figure.startswith("features_") else None


def figure_source_table(figure: str) -> str | None:
    """The table a figure is drawn from (None for the embeddings, drawn from their own parquet files)."""
    if figure_kind(figure) == "features":
        return None
    return figure  # a cut-off figure reads its dataset's view, 'cutoff_<dataset>'; the others their table


def figure_paths(figure: str) -> list[str]:
    return [path("figure", figure=figure, ext=ext) for ext in FIGURE_EXTENSIONS]


def cutoff_claims_path(dataset: str) -> str:
    """The claims of one dataset's cut-off figure (C0-C4), part of its figure target."""
    return path("cutoff_claims", dataset=dataset)


def paper_figure(config: dict, figure: str) -> str:
    """The paper figure a figure file reproduces ("Fig. 2" .. "Fig. 8"; report sections use these names), or
    "Training curves" (no paper figure: every net's per-epoch training records)."""
    kind = figure_kind(figure)
    if kind == "cutoff":
        dataset = figure_dataset(figure)
        mapped = [f for f, d in (config.get("figures") or {}).items() if d == dataset]
        return f"Fig. {mapped[0][3:]}" if mapped else f"Fig. 2-4 ({dataset})"
    if kind == "features" or figure == DIVERGENCE_FIGURE:
        return "Fig. 8"
    return {"layer_cutoff": "Fig. 5", "module_subsets": "Fig. 6", "reinit": "Fig. 7",
            TRAINING_CURVES: "Training curves"}[figure]


def check_table(table: str, datasets) -> str:
    """`table` if the config makes it, else a one-line ConfigError."""
    if table_kind(table) not in TABLES or (table_dataset(table) is not None and table_dataset(table) not in datasets):
        raise ConfigError(f"table {table!r} is not valid; valid: {table_names_pattern(datasets).replace('|', ', ')}")
    return table
