"""What a config expands to: settings, cells, retraining groups, evaluations, tables, figures and jobs, and
what each artifact is made from (standard library only; one source for the workflow, the cost model, the
claims check, `verify` and the preflight).
"""

from __future__ import annotations

import zlib

from . import conf, layout, sharding
from .vocabulary import (
    LAYER_COUNTS,
    PRETRAINED,
    PRETRAININGS,
    ConfigError,
    Setting,
    all_subsets,
    cell_of_layers,
    cell_of_mask,
    cell_order,
    cutoff_mask,
    layer_range,
    num_modules,
)

# --------------------------------------------------------------------------- cells


def cutoff_cells(config: dict, arch: str) -> dict[tuple[str, int], str | None]:
    """Fig. 2-4: (direction, cut-off) -> cell (None = nothing retrained = the pretrained net)."""
    n = num_modules(arch)  # cut-offs 0..N of the arch's own N modules (its own list: config archs.<arch>.cutoffs)
    return {(d, c): cell_of_mask(cutoff_mask(c, d, n)) for d, cs in conf.cutoffs(config, arch).items() for c in cs}


def layer_cutoff_cells(config: dict, arch: str) -> dict[int, str | None]:
    """Fig. 5: layer cut-off k -> cell."""
    cfg = conf.with_defaults(conf.analysis(config, "layer_cutoff"), "analyses", "layer_cutoff")
    return {k: cell_of_layers(arch, layer_range(arch, k, cfg["direction"])) for k in cfg["cutoffs"]}


def module_subset_cells(config: dict) -> dict[str, str | None]:
    """Fig. 6: mask -> cell (all 2^N masks of the analysis arch's N modules unless `subsets` names some)."""
    cfg = conf.analysis(config, "module_subsets")
    return {mask: cell_of_mask(mask) for mask in (cfg.get("subsets") or all_subsets(num_modules(cfg["arch"])))}


def settings(config: dict) -> list[Setting]:
    """Every pretrained net the config needs (the cut-off experiment and the analyses start from them)."""
    return sorted({Setting(dataset, arch, seed, p) for dataset, dcfg in config["datasets"].items()
                   for arch in dcfg["archs"] for seed in conf.seeds(config) for p in PRETRAININGS})


def cells(config: dict) -> dict[Setting, list[str]]:
    """Every retrained cell per setting, deduplicated across figures (a cell shared by Fig. 2, 5 and 6 is
    trained and evaluated once)."""
    found: dict[Setting, set[str]] = {}

    def add(dataset, arch, pretrainings, cells_):
        for cell in cells_:
            for p in pretrainings:
                for seed in conf.seeds(config):
                    if cell is not None:
                        found.setdefault(Setting(dataset, arch, seed, p), set()).add(cell)

    for dataset, dcfg in config["datasets"].items():
        for arch in dcfg["archs"]:
            add(dataset, arch, PRETRAININGS, cutoff_cells(config, arch).values())
    a = conf.analysis(config, "layer_cutoff")
    if a:
        add(a["dataset"], a["arch"], conf.analysis_pretrainings(config, "layer_cutoff"),
            layer_cutoff_cells(config, a["arch"]).values())
    a = conf.analysis(config, "module_subsets")
    if a:
        add(a["dataset"], a["arch"], conf.analysis_pretrainings(config, "module_subsets"),
            module_subset_cells(config).values())
    return {s: sorted(found[s], key=cell_order) for s in sorted(found)}


def figure_cells(config: dict, setting: Setting) -> set[str]:
    """The cells of a setting that its dataset's cut-off figure (Fig. 2-4) needs."""
    if setting.arch not in config["datasets"].get(setting.dataset, {}).get("archs", ()):
        return set()
    return {c for c in cutoff_cells(config, setting.arch).values() if c}


# --------------------------------------------------------------------------- retraining groups (jobs)


def groups(config: dict) -> dict[Setting, dict[str, list[str]]]:
    """Cells per retraining job. Without `grouping` every cell is its own job (group id = cell id). With
    `grouping.jobs_per_net: K` the cut-off figure's cells of a setting go to K jobs `cutoff<i>` and the cells
    only the analyses need (Fig. 5/6) to K jobs `analysis<i>` (unless `analysis_apart: false`: all in the
    `cutoff<i>` jobs), each by a stable hash of the cell id: adding a cell reruns only its group, and
    `snakemake fig2` trains the cut-off figure's cells only."""
    grouping = conf.grouping(config)
    k, apart = grouping["jobs_per_net"], grouping["analysis_apart"]
    out: dict[Setting, dict[str, list[str]]] = {}
    for setting, found in cells(config).items():
        if not k:
            out[setting] = {cell: [cell] for cell in found}
            continue
        figure, grouped = figure_cells(config, setting), {}
        for cell in found:
            kind = "analysis" if apart and cell not in figure else "cutoff"
            grouped.setdefault(layout.group_id(kind, zlib.crc32(cell.encode()) % k), []).append(cell)
        out[setting] = dict(sorted(grouped.items()))
    return out


def group_of(config: dict, setting: Setting, cell: str) -> str:
    for group, members in groups(config).get(setting, {}).items():
        if cell in members:
            return group
    raise ConfigError(f"cell {cell} of {setting} is not in the config's grid")


def group_cells(config: dict, setting: Setting, group: str) -> list[str]:
    found = groups(config).get(setting, {})
    if group not in found:
        raise ConfigError(f"no retraining group {group} of {setting}; this config's are: {', '.join(found) or 'none'}")
    return found[group]


def cell_path(config: dict, setting: Setting, cell: str) -> str:
    return layout.cell_path(setting, group_of(config, setting, cell), cell)


def net_path(config: dict, setting: Setting, cell: str) -> str:
    """The checkpoint of a cell ('pretrained': the pretrained net's file)."""
    return layout.pretrained_path(setting) if cell == PRETRAINED else cell_path(config, setting, cell)


def net_job_output(config: dict, setting: Setting, cell: str) -> str:
    """What the job that makes a cell's checkpoint outputs: the pretrained file, or the cell's group folder."""
    if cell == PRETRAINED:
        return layout.pretrained_path(setting)
    return layout.group_dir(setting, group_of(config, setting, cell))


# --------------------------------------------------------------------------- evaluations


def evaluation_units(config: dict, setting: Setting) -> dict[str, list[str]]:
    """The evaluation jobs of a setting: {unit (`layout`): the cells it evaluates ('pretrained' and cells)}.

    One job per pretrained net and per retraining group. With `grouping` (a laptop, where starting a job costs
    more than evaluating a demo net) one job evaluates the pretrained net with the cut-off figure's groups
    (`cutoff_nets`) and one the analysis groups (`analysis_nets`): an evaluation change still reruns
    evaluations only, and `snakemake fig2` evaluates no analysis cell."""
    grouped = groups(config).get(setting, {})
    if not conf.grouping(config)["jobs_per_net"]:
        return {layout.PRETRAINED_UNIT: [PRETRAINED], **{layout.retrained_unit(g): cs for g, cs in grouped.items()}}
    units = {layout.GROUPED_UNITS["cutoff"]: [PRETRAINED] + [c for g, cs in grouped.items()
                                                             if layout.group_kind(g) == "cutoff" for c in cs]}
    analysis = [c for g, cs in grouped.items() if layout.group_kind(g) == "analysis" for c in cs]
    if analysis:
        units[layout.GROUPED_UNITS["analysis"]] = analysis
    return units


def evaluation_cells(config: dict, setting: Setting, unit: str) -> list[str]:
    """The cells the evaluation job `unit` of `setting` evaluates."""
    unit = layout.whole_unit(unit)
    if unit == layout.AUTOATTACK_UNIT:
        return autoattack_cells(config, setting)
    units = evaluation_units(config, setting)
    if unit not in units:
        raise ConfigError(f"no evaluation {unit} of {setting}; this config's are: {', '.join(units)}")
    return units[unit]


def evaluated_checkpoints(config: dict, setting: Setting, unit: str) -> dict[str, str]:
    """{cell: checkpoint file} an evaluation job reads (each checkpoint's metadata must name its cell)."""
    return {c: net_path(config, setting, c) for c in evaluation_cells(config, setting, unit)}


def evaluated_job_outputs(config: dict, setting: Setting, unit: str) -> list[str]:
    """The outputs of the jobs whose nets an evaluation reads (its rule inputs): pretrained files, group folders."""
    return sorted({net_job_output(config, setting, c) for c in evaluation_cells(config, setting, unit)})


def evaluations(config: dict, dataset: str | None = None, cutoff_only: bool = False) -> list[str]:
    """Every evaluation record file (the pretrained nets and every retraining group), optionally of one dataset
    and only those holding cut-off figure cells or a pretrained net (what a cut-off table needs)."""
    out = []
    for setting in settings(config):  # every setting with cells is one (check: analyses use configured archs)
        if dataset is not None and setting.dataset != dataset:
            continue
        wanted = figure_cells(config, setting) | {PRETRAINED}
        for unit, members in evaluation_units(config, setting).items():
            if not cutoff_only or wanted.intersection(members):
                out.append(layout.evaluation_paths(setting, unit)[0])
    return out


def outcome_files(config: dict, dataset: str | None = None, cutoff_only: bool = False) -> list[str]:
    """The per-sample outcome files beside `evaluations(...)`'s record files."""
    return [layout.outcomes_of(p) for p in evaluations(config, dataset, cutoff_only)]


def autoattack_cells(config: dict, setting: Setting) -> list[str]:
    """The nets of a setting evaluated with AutoAttack too ('pretrained' and cells of the grid)."""
    aa = conf.autoattack_config(config, setting.dataset)
    if not aa:
        return []
    chosen = conf.with_defaults(aa, "datasets", "*", "autoattack")["cells"]
    return [c for c in chosen if c == PRETRAINED or c in cells(config).get(setting, [])]


def autoattack_settings(config: dict) -> list[Setting]:
    return [s for s in settings(config) if autoattack_cells(config, s)]


def reinit_settings(config: dict) -> list[Setting]:
    a = conf.analysis(config, "reinit")
    if not a:
        return []
    return [Setting(ds, a["arch"], seed, p) for ds in a["datasets"] for seed in conf.seeds(config)
            for p in PRETRAININGS]


def feature_settings(config: dict) -> list[Setting]:
    a = conf.analysis(config, "features")
    if not a:
        return []
    return [Setting(a["dataset"], a["arch"], seed, p) for seed in conf.seeds(config) for p in PRETRAININGS]


# --------------------------------------------------------------------------- tables and figures


def tables(config: dict) -> list[str]:
    """The table names this config produces."""
    names = ["cutoff", "outcomes", layout.TRAINING_CURVES]
    names += [t for t, a in (("layer_cutoff", "layer_cutoff"), ("module_subsets", "module_subsets"),
                             ("reinit", "reinit"), ("feature_divergence", "features")) if conf.analysis(config, a)]
    if autoattack_settings(config):
        names.append("robustness_gap")
    return [t for t in layout.TABLES if t in names]


def table_inputs(config: dict, table: str) -> list[str]:
    """What each table is gathered from."""
    layout.check_table(table, config["datasets"])
    kind, dataset = layout.table_kind(table), layout.table_dataset(table)
    if kind == "cutoff":
        return evaluations(config, dataset, cutoff_only=True)
    if kind == "outcomes":
        return outcome_files(config)
    if kind in ("layer_cutoff", "module_subsets"):
        return evaluations(config, conf.analysis(config, kind)["dataset"])
    if kind == "reinit":
        return [layout.reinit_path(s) for s in reinit_settings(config)]
    if kind == "robustness_gap":  # AutoAttack outcomes, then the PGD outcomes of the same settings
        aa = autoattack_settings(config)
        pgd = [layout.evaluation_paths(s, unit)[1] for s in aa for unit in evaluation_units(config, s)]
        return [layout.evaluation_paths(s, layout.AUTOATTACK_UNIT)[1] for s in aa] + pgd
    if kind == layout.TRAINING_CURVES:
        return trained_job_outputs(config)
    return [layout.divergence_path(s) for s in feature_settings(config)]


def trained_job_outputs(config: dict) -> list[str]:
    """The training jobs' outputs (checkpoints with their per-epoch history): the trained pretrained nets (not
    imported ones), then every retraining group's folder."""
    nets = [layout.pretrained_path(s) for s in settings(config)
            if not conf.published_weights(config, s.dataset, s.arch, s.pretraining)]
    return nets + [layout.group_dir(s, g) for s, grouped in groups(config).items() for g in grouped]


def figures(config: dict) -> list[str]:
    """Figure stems: the cut-off figure per dataset, then one per configured analysis, then the training curves."""
    stems = [layout.cutoff_figure(d) for d in config["datasets"]]
    for name in ("layer_cutoff", "module_subsets", "reinit"):
        if conf.analysis(config, name):
            stems.append(name)
    if conf.analysis(config, "features"):
        stems += [layout.embedding_figure(m) for m in conf.analysis(config, "features")["methods"]]
        stems.append(layout.DIVERGENCE_FIGURE)
    stems.append(layout.TRAINING_CURVES)
    return stems


def figure_inputs(config: dict, figure: str) -> list[str]:
    """A figure is drawn from its table, or (t-SNE/UMAP/TriMap panels) from the embeddings of every net."""
    method = layout.figure_method(figure)
    if method is not None:
        return [layout.embedding_path(s, method) for s in feature_settings(config)]
    return [layout.table_path(layout.figure_source_table(figure))]


def named_figure(config: dict, name: str) -> list[str]:
    """Files of a paper figure target (fig2..fig8): its figures (a cut-off figure's target includes its claims) and
    what they are drawn from (the per-dataset table, the embeddings). Snakemake does not rerun a job for a missing
    input whose output looks up to date, so a deleted table or embedding is rebuilt only when it is a target."""
    if name in layout.CUTOFF_FIGURES:
        mapped = config.get("figures") or {}
        if name not in mapped:
            raise ConfigError(f"{name} is not mapped to a dataset in config 'figures' "
                              f"(mapped: {', '.join(mapped) or 'none'})")
        stems = [layout.cutoff_figure(mapped[name])]
        extra = [layout.cutoff_claims_path(mapped[name])]
    else:
        a = layout.FIGURE_TARGETS[name]
        if not conf.analysis(config, a):
            raise ConfigError(f"{name} needs the config section analyses.{a} (configured: "
                              f"{', '.join(config.get('analyses') or {}) or 'none'})")
        stems = [s for s in figures(config) if s == a or (a == "features" and layout.paper_figure(config, s) == "Fig. 8")]
        extra = []
    drawn_from = sorted({p for s in stems for p in figure_inputs(config, s)})
    return [*(p for s in stems for p in layout.figure_paths(s)), *extra, *drawn_from]


COORDINATE_TABLES = ("cutoff", "layer_cutoff", "module_subsets")  # tables whose rows are grid coordinates


def table_coordinates(config: dict, table: str) -> list[dict]:
    """Where each row of a figure table comes from: its coordinates (direction and cut-off, layer cut-off, or
    subset) and the cell evaluated there ('pretrained' where nothing is retrained)."""
    kind, dataset = layout.table_kind(table), layout.table_dataset(table)
    rows = []
    if kind == "cutoff":
        for ds, dcfg in config["datasets"].items():
            if dataset is not None and ds != dataset:
                continue
            for arch in dcfg["archs"]:
                for p in PRETRAININGS:
                    # the setting's own pretrained net: the "only pretrained" reference of the figure
                    rows.append({"dataset": ds, "arch": arch, "pretraining": p, "direction": "none", "cutoff": None,
                                 "cell": PRETRAINED})
                    for (d, c), cell in cutoff_cells(config, arch).items():
                        rows.append({"dataset": ds, "arch": arch, "pretraining": p, "direction": d, "cutoff": c,
                                     "cell": cell or PRETRAINED})
    elif kind == "layer_cutoff":
        a = conf.with_defaults(conf.analysis(config, kind), "analyses", "layer_cutoff")
        for p in conf.analysis_pretrainings(config, kind):
            for k, cell in {0: None, **layer_cutoff_cells(config, a["arch"])}.items():
                rows.append({"dataset": a["dataset"], "arch": a["arch"], "pretraining": p,
                             "direction": a["direction"], "layer_cutoff": k, "cell": cell or PRETRAINED})
    elif kind == "module_subsets":
        a = conf.analysis(config, kind)
        for p in conf.analysis_pretrainings(config, kind):
            for mask, cell in {"0" * num_modules(a["arch"]): None, **module_subset_cells(config)}.items():
                rows.append({"dataset": a["dataset"], "arch": a["arch"], "pretraining": p, "subset": mask,
                             "cell": cell or PRETRAINED})
    else:
        raise ConfigError(f"table {table!r} has no grid coordinates; valid: cutoff, layer_cutoff, module_subsets")
    return rows


# --------------------------------------------------------------------------- jobs

# Rules whose jobs need a GPU on a cluster (priced by `tools.cost`), and the training rules that keep a resume
# state (results/.state).
GPU_RULES = ("pretrain", "retrain", "evaluate", "evaluate_autoattack", "reinit", "sample_features")
RESUMABLE_RULES = ("pretrain", "retrain")


def gpu_jobs(config: dict) -> list[tuple[str, Setting, str]]:
    """(rule, setting, unit) of every GPU job: unit = 'pretrain' / a group id (retraining) / an evaluation unit /
    'autoattack' / 'reinit' / 'features'."""
    jobs = [("pretrain", s, "pretrain") for s in settings(config)  # published weights: imported, not trained
            if not conf.published_weights(config, s.dataset, s.arch, s.pretraining)]
    for setting, grouped in groups(config).items():
        jobs += [("retrain", setting, g) for g in grouped]
    jobs += [("evaluate", s, unit) for s in settings(config) for unit in evaluation_units(config, s)]
    jobs += [("evaluate_autoattack", s, unit) for s in autoattack_settings(config)
             for unit in sharding.shard_units(config, s.dataset, layout.AUTOATTACK_UNIT)]
    jobs += [("reinit", s, "reinit") for s in reinit_settings(config)]
    jobs += [("sample_features", s, "features") for s in feature_settings(config)]
    return jobs


def job_counts(config: dict) -> dict[str, int]:
    counts = dict.fromkeys(GPU_RULES, 0)
    for rule, _, _ in gpu_jobs(config):
        counts[rule] += 1
    return counts


def layer_count(arch: str) -> int:
    return LAYER_COUNTS[arch]
