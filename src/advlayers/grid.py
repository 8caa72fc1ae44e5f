"""The experiment grid: its vocabulary, and what a workflow config expands to (standard library only).

One source for the Snakemake workflow (workflow/rules/common.smk), the cost model (`advlayers.cost`), the
claims check and `verify`: no torch here, so building the DAG stays fast.

Vocabulary (the README's glossary uses the same words)
------------------------------------------------------
pretraining   how the net was first trained: "conventional" or "adversarial".
retraining    how the retrained layers are trained: always the opposite of the pretraining (paper §3).
module        m0..m5, the six parts a net is cut into at its downsampling layers (`advlayers.models`).
layer         a conv/linear layer with the BatchNorm after it; ResNet-18 has 21 (`MODULE_LAYERS`).
cell          one retrained net: the set of layers re-initialised and retrained, the rest frozen. Written
              canonically as a module mask "m110000" (m0 and m1) when it is a union of whole modules, else
              as a layer range "l0-7" (layers 0..6). The cut-off experiment's 'before 2', the layer cut-off 5
              and the module subset 110000 are all the cell "m110000": computed once, used by every figure.
cut-off       (Fig. 2-4) 'before c' retrains m0..m(c-1), 'after c' retrains m(c)..m5.
layer cut-off (Fig. 5) 'before k' retrains the first k layers.
module subset (Fig. 6) any set of modules, a 6-character mask (character i = m_i retrained).
rewind/redraw (Fig. 7) one layer set back to its epoch-0 values / to a fresh random draw; no retraining.
              (Retraining always starts its layers from a fresh draw.)
seed          the training seed (config `seeds`); each seed has its own checkpoints and table rows.
batch         the cells one retraining job trains (config `batching`): one cell per job on a cluster.

Why one long module: it is the single source that the workflow, the cost model, the claims check and
`verify` read; split up, the copies it replaced would come back.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# --------------------------------------------------------------------------- vocabulary

PRETRAININGS = ("conventional", "adversarial")
DIRECTIONS = ("before", "after")
NUM_MODULES = 6
MODULE_NAMES = tuple(f"m{i}" for i in range(NUM_MODULES))
DATASETS = ("mnist5k", "digits", "cifar10", "imagenette", "imagenet")
FOLDER_DATASETS = ("imagenette", "imagenet")  # streamed image folders; the others are held in memory
EMBEDDED_DATASETS = ("mnist5k", "digits")  # shipped inside installed packages: no root, no download
# Layers (conv/linear + BatchNorm, `advlayers.models.layers`) in each module m0..m5, per arch; the counts are
# checked against the built models by tests/test_grid.py.
MODULE_LAYERS = {
    "resnet18": (1, 4, 5, 5, 5, 1),
    "resnet50": (1, 10, 13, 19, 10, 1),
    "vgg11_bn": (1, 1, 2, 2, 2, 3),
    "vgg16_bn": (2, 2, 3, 3, 3, 3),
}
ARCHS = tuple(MODULE_LAYERS)
LAYER_COUNTS = {arch: sum(counts) for arch, counts in MODULE_LAYERS.items()}
ANALYSES = ("layer_cutoff", "module_subsets", "reinit", "features")
REINIT_OPERATIONS = ("rewind", "redraw")
REDRAW_SEED_OFFSET = 1_000_000  # fresh draws (retraining, Fig. 7 redraw) use seed + this: not pretraining's stream
BN_POLICIES = ("reset", "keep_stats")
EMBED_METHODS = ("tsne", "umap", "trimap")
FIGURE_NAMES = {"fig5": "layer_cutoff", "fig6": "module_subsets", "fig7": "reinit", "fig8": "features"}
CUTOFF_FIGURES = ("fig2", "fig3", "fig4")  # the cut-off figure of one dataset each (config `figures`)


def opposite(pretraining: str) -> str:
    """The retraining mode of a setting: the opposite of its pretraining (paper §3)."""
    _check("pretraining", pretraining, PRETRAININGS)
    return "adversarial" if pretraining == "conventional" else "conventional"


def _check(name, value, valid):
    if value not in valid:
        raise ConfigError(f"{name} = {value!r} is not valid; valid choices: {', '.join(map(str, valid))}")
    return value


class ConfigError(ValueError):
    """A config (or argument) that names something the grid does not know; the message is one line."""


# --------------------------------------------------------------------------- cells

MASK_CHARS = frozenset("01")


def module_mask(modules) -> str:
    """('m0', 'm2') -> '101000' (character i = '1' iff m_i is in the set)."""
    unknown = sorted(set(modules) - set(MODULE_NAMES))
    if unknown:
        raise ConfigError(f"unknown module(s) {unknown}; valid: {', '.join(MODULE_NAMES)}")
    return "".join("1" if m in modules else "0" for m in MODULE_NAMES)


def mask_modules(mask: str) -> tuple[str, ...]:
    """'101000' -> ('m0', 'm2')."""
    if not (isinstance(mask, str) and len(mask) == NUM_MODULES and set(mask) <= MASK_CHARS):
        raise ConfigError(f"a module subset is {NUM_MODULES} characters of 0/1 (e.g. '101000'), got {mask!r}")
    return tuple(m for m, bit in zip(MODULE_NAMES, mask) if bit == "1")


def cutoff_mask(cutoff: int, direction: str) -> str:
    """Cut-off c: 'before' retrains m0..m(c-1), 'after' m(c)..m5 (c in 0..6)."""
    _check("direction", direction, DIRECTIONS)
    if not (isinstance(cutoff, int) and not isinstance(cutoff, bool) and 0 <= cutoff <= NUM_MODULES):
        raise ConfigError(f"cut-off must be an integer in 0..{NUM_MODULES}, got {cutoff!r}")
    before = "1" * cutoff + "0" * (NUM_MODULES - cutoff)
    return before if direction == "before" else "".join("1" if b == "0" else "0" for b in before)


def module_spans(arch: str) -> list[range]:
    """The layer indices of each module m0..m5."""
    _check("arch", arch, ARCHS)
    spans, start = [], 0
    for count in MODULE_LAYERS[arch]:
        spans.append(range(start, start + count))
        start += count
    return spans


def layer_range(arch: str, k: int, direction: str = "before") -> range:
    """Layer cut-off k: 'before' = layers 0..k-1, 'after' = layers k..L-1."""
    _check("direction", direction, DIRECTIONS)
    n = LAYER_COUNTS[_check("arch", arch, ARCHS)]
    if not (isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= n):
        raise ConfigError(f"layer cut-off must be an integer in 0..{n} ({arch} has {n} layers), got {k!r}")
    return range(0, k) if direction == "before" else range(k, n)


def cell_of_layers(arch: str, layers) -> str | None:
    """The canonical cell id of a set of retrained layers (None for the empty set, i.e. the pretrained net)."""
    layers = sorted(set(layers))
    if not layers:
        return None
    spans = module_spans(arch)
    covered = [m for m, span in enumerate(spans) if set(span) <= set(layers)]
    if sorted(i for m in covered for i in spans[m]) == layers:
        return "m" + "".join("1" if m in covered else "0" for m in range(NUM_MODULES))
    if layers != list(range(layers[0], layers[-1] + 1)):
        raise ConfigError(f"layers {layers} are neither whole modules nor one contiguous range")
    return f"l{layers[0]}-{layers[-1] + 1}"


def cell_of_mask(mask: str) -> str | None:
    """The cell of a module subset (None for '000000', the pretrained net)."""
    return "m" + mask if mask_modules(mask) else None


def cell_layers(arch: str, cell: str) -> list[int]:
    """Layer indices a cell retrains."""
    spans = module_spans(arch)
    if cell.startswith("m"):
        return [i for m in mask_modules(cell[1:]) for i in spans[int(m[1:])]]
    try:
        start, stop = (int(v) for v in cell[1:].split("-"))
    except ValueError:
        raise ConfigError(f"a cell is 'm' + 6 bits or 'l<start>-<stop>', got {cell!r}") from None
    if not (cell.startswith("l") and 0 <= start < stop <= LAYER_COUNTS[arch]):
        raise ConfigError(f"cell {cell!r} is not a layer range of {arch} (0..{LAYER_COUNTS[arch]})")
    return list(range(start, stop))


def cell_modules(arch: str, cell: str) -> list[str]:
    """The modules a cell retrains (wholly or in part), in order."""
    spans = module_spans(arch)
    chosen = set(cell_layers(arch, cell))
    return [MODULE_NAMES[m] for m, span in enumerate(spans) if chosen & set(span)]


def describe_cell(arch: str, cell: str) -> str:
    """'m0-m1' / 'm0+m2' for module cells, 'layers 0-6' for a layer range (figure labels)."""
    if cell.startswith("m"):
        modules = mask_modules(cell[1:])
        idx = [int(m[1:]) for m in modules]
        if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1:
            return f"m{idx[0]}-m{idx[-1]}"
        return "+".join(modules)
    layers = cell_layers(arch, cell)
    return f"layers {layers[0]}-{layers[-1]}"


# --------------------------------------------------------------------------- config access


def seeds(config: dict) -> list[int]:
    return list(config.get("seeds") or [0])


def dataset_config(config: dict, dataset: str) -> dict:
    if dataset not in config["datasets"]:
        raise ConfigError(f"dataset {dataset!r} is not configured; configured: {', '.join(config['datasets'])}")
    return config["datasets"][dataset]


def analysis(config: dict, name: str) -> dict | None:
    """An analysis's config section, or None when the config does not run it."""
    return (config.get("analyses") or {}).get(name)


def analysis_pretrainings(config: dict, name: str) -> list[str]:
    cfg = analysis(config, name) or {}
    return list(cfg.get("pretrainings") or PRETRAININGS)


def width(config: dict, dataset: str) -> float:
    return float(dataset_config(config, dataset).get("width", 1.0))


def recipe_params(config: dict, dataset: str, retrain: bool = False) -> dict:
    """Preset name and overrides (passed to jobs as params: a changed value reruns the jobs that use it)."""
    cfg = dataset_config(config, dataset)
    overrides = dict(cfg.get("recipe_overrides") or {})
    if retrain:
        overrides.update(cfg.get("retrain_overrides") or {})
    return {"name": cfg["recipe"], "overrides": dict(sorted(overrides.items()))}


EVAL_DEFAULTS = {"attack": "pgd", "n": None, "restarts": 1, "batch_size": 256}


def eval_params(config: dict, dataset: str, analysis_name: str | None = None) -> dict:
    """The dataset's evaluation settings, with an analysis's own `eval` overrides (reinit, features) on top."""
    cfg = {**EVAL_DEFAULTS, **dataset_config(config, dataset)["eval"]}
    if analysis_name is not None:
        cfg.update((analysis(config, analysis_name) or {}).get("eval") or {})
    return dict(sorted(cfg.items()))


def resources(config: dict, dataset: str, stage: str, key: str, default):
    """A job resource (runtime, mem_mb, gpu) of a dataset's stage (pretrain, retrain, evaluate)."""
    stage = RESOURCE_STAGE.get(stage, stage)
    return ((dataset_config(config, dataset).get("resources") or {}).get(stage) or {}).get(key, default)


def job_threads(config: dict) -> int:
    return int((config.get("resources") or {}).get("threads", 1))


def job_gpus(config: dict) -> int:
    return int((config.get("resources") or {}).get("gpu", 0))


# --------------------------------------------------------------------------- what a config implies


@dataclass(frozen=True, order=True)
class Setting:
    """Where cells live: one pretrained net (dataset, arch, seed, pretraining)."""

    dataset: str
    arch: str
    seed: int
    pretraining: str

    @property
    def retraining(self) -> str:
        return opposite(self.pretraining)


def cutoff_cells(config: dict, arch: str) -> dict[tuple[str, int], str | None]:
    """Fig. 2-4: (direction, cut-off) -> cell (None = nothing retrained = the pretrained net)."""
    return {(d, c): cell_of_mask(cutoff_mask(c, d)) for d in DIRECTIONS for c in config["cutoffs"][d]}


def layer_cutoff_cells(config: dict, arch: str) -> dict[int, str | None]:
    """Fig. 5: layer cut-off k -> cell."""
    cfg = analysis(config, "layer_cutoff")
    direction = cfg.get("direction", "before")
    return {k: cell_of_layers(arch, layer_range(arch, k, direction)) for k in cfg["cutoffs"]}


def all_subsets() -> list[str]:
    """The 64 module masks, '000000' (nothing retrained) first."""
    return ["".join("1" if mask >> i & 1 else "0" for i in range(NUM_MODULES)) for mask in range(2**NUM_MODULES)]


def module_subset_cells(config: dict) -> dict[str, str | None]:
    """Fig. 6: mask -> cell."""
    cfg = analysis(config, "module_subsets")
    return {mask: cell_of_mask(mask) for mask in (cfg.get("subsets") or all_subsets())}


def settings(config: dict) -> list[Setting]:
    """Every pretrained net the config needs (the cut-off experiment and the analyses start from them)."""
    found = set()
    for dataset, dcfg in config["datasets"].items():
        for arch in dcfg["archs"]:
            for seed in seeds(config):
                found.update(Setting(dataset, arch, seed, p) for p in PRETRAININGS)
    return sorted(found)


def cells(config: dict) -> dict[Setting, list[str]]:
    """Every retrained cell per setting, deduplicated across figures (a cell shared by Fig. 2, 5 and 6 is
    trained and evaluated once)."""
    found: dict[Setting, set[str]] = {}

    def add(dataset, arch, pretraining, cell):
        if cell is None:
            return
        for seed in seeds(config):
            found.setdefault(Setting(dataset, arch, seed, pretraining), set()).add(cell)

    for dataset, dcfg in config["datasets"].items():
        for arch in dcfg["archs"]:
            for cell in cutoff_cells(config, arch).values():
                for p in PRETRAININGS:
                    add(dataset, arch, p, cell)
    if analysis(config, "layer_cutoff"):
        a = analysis(config, "layer_cutoff")
        for cell in layer_cutoff_cells(config, a["arch"]).values():
            for p in analysis_pretrainings(config, "layer_cutoff"):
                add(a["dataset"], a["arch"], p, cell)
    if analysis(config, "module_subsets"):
        a = analysis(config, "module_subsets")
        for cell in module_subset_cells(config).values():
            for p in analysis_pretrainings(config, "module_subsets"):
                add(a["dataset"], a["arch"], p, cell)
    return {s: sorted(found[s], key=_cell_order) for s in sorted(found)}


def _cell_order(cell: str):
    return (cell[0] != "m", cell)


def figure_cells(config: dict, setting: Setting) -> set[str]:
    """The cells of a setting that its dataset's cut-off figure (Fig. 2-4) needs."""
    if setting.arch not in config["datasets"].get(setting.dataset, {}).get("archs", ()):
        return set()
    return {c for c in cutoff_cells(config, setting.arch).values() if c}


def batches(config: dict) -> dict[Setting, dict[str, list[str]]]:
    """Cells per retraining job. Without `batching` every cell is its own job (batch id = cell id). With
    `batching.jobs_per_setting: K` the cut-off figure's cells of a setting go to K jobs `batch<i>` and the cells
    only the analyses need (Fig. 5/6) to K jobs `analysis<i>` (unless `analysis_jobs_apart: false`: all in the
    `batch<i>` jobs), each by a stable hash of the cell id: adding a cell reruns only its batch, and
    `snakemake fig2` trains the cut-off figure's cells only."""
    batching = config.get("batching") or {}
    k, apart = batching.get("jobs_per_setting"), batching.get("analysis_jobs_apart", True)
    out: dict[Setting, dict[str, list[str]]] = {}
    for setting, found in cells(config).items():
        if not k:
            out[setting] = {cell: [cell] for cell in found}
            continue
        figure, groups = figure_cells(config, setting), {}
        for cell in found:
            group = "analysis" if apart and cell not in figure else "batch"
            groups.setdefault(f"{group}{zlib.crc32(cell.encode()) % k}", []).append(cell)
        out[setting] = dict(sorted(groups.items()))
    return out


def batch_of(config: dict, setting: Setting, cell: str) -> str:
    for batch, members in batches(config).get(setting, {}).items():
        if cell in members:
            return batch
    raise ConfigError(f"cell {cell} of {setting} is not in the config's grid")


# --------------------------------------------------------------------------- paths


def data_path(dataset: str) -> str:
    return f"results/data/{dataset}.{'json' if dataset in FOLDER_DATASETS else 'pt'}"


def net_dir(kind: str, dataset: str, arch: str, seed: int) -> str:
    return f"results/{kind}/{dataset}/{arch}/seed{seed}"


def pretrained_path(setting: Setting) -> str:
    return f"{net_dir('checkpoints', setting.dataset, setting.arch, setting.seed)}/pretrain_{setting.pretraining}.pt"


def initial_path(setting: Setting) -> str:
    """The epoch-0 weights pretraining started from (Fig. 7's rewind source)."""
    return f"{net_dir('checkpoints', setting.dataset, setting.arch, setting.seed)}/init_{setting.pretraining}.pt"


def batch_dir(setting: Setting, batch: str) -> str:
    return f"{net_dir('checkpoints', setting.dataset, setting.arch, setting.seed)}/retrain_{setting.pretraining}_{batch}"


def cell_path(config: dict, setting: Setting, cell: str) -> str:
    return f"{batch_dir(setting, batch_of(config, setting, cell))}/{cell}.pt"


def evaluation_units(config: dict, setting: Setting) -> dict[str, list[str]]:
    """The evaluation jobs of a setting: {net (the files' stem): what it evaluates ('pretrain' and batch ids)}.

    One job per pretrained net and per retraining batch. With `batching` (a laptop, where starting a job costs
    more than evaluating a demo net) one job evaluates the pretrained net with the cut-off figure's batches
    (`nets_<pretraining>_cutoff`) and one the analysis batches (`nets_<pretraining>_analysis`): an evaluation
    change still reruns evaluations only, and `snakemake fig2` evaluates no analysis cell."""
    groups = list(batches(config).get(setting, {}))
    p = setting.pretraining
    if not (config.get("batching") or {}).get("jobs_per_setting"):
        return {f"pretrain_{p}": ["pretrain"], **{f"retrain_{p}_{b}": [b] for b in groups}}
    units = {f"nets_{p}_cutoff": ["pretrain"] + [b for b in groups if b.startswith("batch")]}
    analysis = [b for b in groups if b.startswith("analysis")]
    if analysis:
        units[f"nets_{p}_analysis"] = analysis
    return units


def evaluation_members(config: dict, setting: Setting, net: str) -> list[str]:
    """What the evaluation job `net` of `setting` evaluates ('pretrain' and batch ids)."""
    units = evaluation_units(config, setting)
    if net not in units:
        raise ConfigError(f"no evaluation {net} of {setting}; this config's are: {', '.join(units)}")
    return units[net]


def evaluation_paths(setting: Setting, net: str) -> tuple[str, str]:
    """(records .json, per-sample outcomes .parquet) of one evaluation job (`evaluation_units`' net)."""
    base = f"{net_dir('evaluations', setting.dataset, setting.arch, setting.seed)}/{net}"
    return f"{base}.json", f"{base}.outcomes.parquet"


def evaluations(config: dict, dataset: str | None = None, cutoff_only: bool = False) -> list[str]:
    """Every evaluation record file (the pretrained nets and every retraining batch), optionally of one dataset
    and only those holding cut-off figure cells or a pretrained net (what a cut-off table needs)."""
    out, grouped = [], batches(config)
    for setting in settings(config):  # every setting with cells is one (validate: analyses use configured archs)
        if dataset is not None and setting.dataset != dataset:
            continue
        groups, wanted = grouped.get(setting, {}), figure_cells(config, setting)
        for net, members in evaluation_units(config, setting).items():
            if not cutoff_only or any(m == "pretrain" or wanted.intersection(groups[m]) for m in members):
                out.append(evaluation_paths(setting, net)[0])
    return out


def outcome_files(config: dict, dataset: str | None = None, cutoff_only: bool = False) -> list[str]:
    """The per-sample outcome files beside `evaluations(...)`'s record files."""
    return [p.replace(".json", ".outcomes.parquet") for p in evaluations(config, dataset, cutoff_only)]


def autoattack_config(config: dict, dataset: str) -> dict | None:
    """A dataset's AutoAttack evaluation (config `datasets.<name>.autoattack`), or None."""
    return dataset_config(config, dataset).get("autoattack")


def autoattack_params(config: dict, dataset: str) -> dict:
    """The AutoAttack evaluation's settings: eps from the dataset's `eval`, n/seed/version from `autoattack`."""
    aa = autoattack_config(config, dataset) or {}
    ev = eval_params(config, dataset)
    return {"attack": "autoattack", "eps": ev["eps"], "version": aa.get("version", "standard"),
            "n": aa.get("n", ev["n"]), "seed": aa.get("seed", ev.get("seed", 0)), "batch_size": ev["batch_size"]}


def autoattack_cells(config: dict, setting: Setting) -> list[str]:
    """The nets of a setting evaluated with AutoAttack too ('pretrained' and cells of the grid)."""
    aa = autoattack_config(config, setting.dataset)
    if not aa:
        return []
    return [c for c in aa.get("cells", ["pretrained"]) if c == "pretrained" or c in cells(config).get(setting, [])]


def autoattack_settings(config: dict) -> list[Setting]:
    return [s for s in settings(config) if autoattack_cells(config, s)]


def autoattack_paths(setting: Setting) -> tuple[str, str]:
    """(records .json, outcomes .parquet) of a setting's AutoAttack evaluation job."""
    base = f"{net_dir('evaluations', setting.dataset, setting.arch, setting.seed)}/autoattack_{setting.pretraining}"
    return f"{base}.json", f"{base}.outcomes.parquet"


def net_checkpoints(config: dict, setting: Setting, cells_: list[str]) -> dict[str, str]:
    """{cell: checkpoint path} ('pretrained': the pretrained net's file)."""
    return {c: pretrained_path(setting) if c == "pretrained" else cell_path(config, setting, c) for c in cells_}


def reinit_settings(config: dict) -> list[Setting]:
    a = analysis(config, "reinit")
    if not a:
        return []
    return [Setting(ds, a["arch"], seed, p) for ds in a["datasets"] for seed in seeds(config) for p in PRETRAININGS]


def reinit_path(setting: Setting) -> str:
    return f"{net_dir('reinit', setting.dataset, setting.arch, setting.seed)}/{setting.pretraining}.parquet"


def feature_settings(config: dict) -> list[Setting]:
    a = analysis(config, "features")
    if not a:
        return []
    return [Setting(a["dataset"], a["arch"], seed, p) for seed in seeds(config) for p in PRETRAININGS]


def features_path(setting: Setting, suffix: str = "") -> str:
    """Activation vectors (.npz); suffix '_tsne' etc. for an embedding, '_divergence' for the statistics."""
    ext = "npz" if not suffix else "parquet"
    return f"{net_dir('features', setting.dataset, setting.arch, setting.seed)}/{setting.pretraining}{suffix}.{ext}"


# --------------------------------------------------------------------------- tables and figures

TABLES = ("cutoff", "layer_cutoff", "module_subsets", "reinit", "feature_divergence", "outcomes", "robustness_gap")


def tables(config: dict) -> list[str]:
    """The table names this config produces."""
    names = ["cutoff", "outcomes"]
    names += [t for t, a in (("layer_cutoff", "layer_cutoff"), ("module_subsets", "module_subsets"),
                             ("reinit", "reinit"), ("feature_divergence", "features")) if analysis(config, a)]
    if autoattack_settings(config):
        names.append("robustness_gap")
    return [t for t in TABLES if t in names]


def table_path(name: str) -> str:
    return f"results/tables/{name}.parquet"


def table_kind(name: str) -> str:
    """'cutoff' for the per-dataset views `cutoff_<dataset>` (what a dataset's cut-off figure reads, so that
    `snakemake fig2` computes that dataset only), else the name itself."""
    return "cutoff" if name.startswith("cutoff_") else name


def table_pattern(config: dict) -> str:
    """Wildcard constraint of table names: the tables and the per-dataset cut-off views."""
    return "|".join([*TABLES, *(f"cutoff_{d}" for d in config["datasets"])])


def table_inputs(config: dict, name: str) -> list[str]:
    """What each table is gathered from."""
    _check("table", table_kind(name), TABLES)
    if name == "cutoff":
        return evaluations(config, cutoff_only=True)
    if name.startswith("cutoff_"):
        dataset = name.split("_", 1)[1]
        dataset_config(config, dataset)  # a one-line error for a dataset the config does not have
        return evaluations(config, dataset, cutoff_only=True)
    if name == "outcomes":
        return outcome_files(config)
    if name in ("layer_cutoff", "module_subsets"):
        a = analysis(config, name)
        return evaluations(config, a["dataset"])
    if name == "reinit":
        return [reinit_path(s) for s in reinit_settings(config)]
    if name == "robustness_gap":  # AutoAttack outcomes, then the PGD outcomes of the same settings
        aa = autoattack_settings(config)
        pgd = [evaluation_paths(s, net)[1] for s in aa for net in evaluation_units(config, s)]
        return [autoattack_paths(s)[1] for s in aa] + pgd
    return [features_path(s, "_divergence") for s in feature_settings(config)]


def figures(config: dict) -> list[str]:
    """Figure stems: cutoff_<dataset> per dataset, then one per configured analysis."""
    stems = [f"cutoff_{d}" for d in config["datasets"]]
    if analysis(config, "layer_cutoff"):
        stems.append("layer_cutoff")
    if analysis(config, "module_subsets"):
        stems.append("module_subsets")
    if analysis(config, "reinit"):
        stems.append("reinit")
    if analysis(config, "features"):
        stems += [f"features_{m}" for m in analysis(config, "features")["methods"]] + ["feature_divergence"]
    return stems


def figure_paths(stem: str) -> list[str]:
    return [f"results/figures/{stem}.{ext}" for ext in ("png", "pdf")]


def figure_table(stem: str) -> str | None:
    """The table a figure is drawn from (None for the embeddings, drawn from their own parquet files)."""
    if stem.startswith("cutoff_"):
        return stem  # the dataset's view of the cut-off table
    if stem.startswith("features_"):
        return None
    return stem


def cutoff_claims_path(dataset: str) -> str:
    """The claims of one dataset's cut-off figure (C0-C4), part of its figure target."""
    return f"results/claims/cutoff_{dataset}.md"


def named_figure(config: dict, name: str) -> list[str]:
    """Files of a paper figure target (fig2..fig8); a cut-off figure's target includes its claims."""
    if name in CUTOFF_FIGURES:
        mapped = config.get("figures") or {}
        if name not in mapped:
            raise ConfigError(f"{name} is not mapped to a dataset in config 'figures' (mapped: {', '.join(mapped) or 'none'})")
        return [*figure_paths(f"cutoff_{mapped[name]}"), cutoff_claims_path(mapped[name])]
    a = FIGURE_NAMES[name]
    if not analysis(config, a):
        raise ConfigError(f"{name} needs the config section analyses.{a} (configured: "
                          f"{', '.join(config.get('analyses') or {}) or 'none'})")
    stems = [s for s in figures(config) if s == a or (a == "features" and (s.startswith("features_") or s == "feature_divergence"))]
    return [p for s in stems for p in figure_paths(s)]


# --------------------------------------------------------------------------- rules

# Rules whose jobs need a GPU on a cluster (priced by advlayers.cost), and whose config resources they use.
GPU_RULES = ("pretrain", "retrain", "evaluate", "evaluate_autoattack", "reinit", "sample_features")
RESUMABLE_RULES = ("pretrain", "retrain")  # training keeps a resume state in results/.state
RESOURCE_STAGE = {"reinit": "evaluate", "sample_features": "evaluate", "evaluate_autoattack": "evaluate"}


def gpu_jobs(config: dict) -> list[tuple[str, Setting, str]]:
    """(rule, setting, unit) of every GPU job: unit = 'pretrain' / a batch id (retraining) / an evaluation's net
    (`evaluation_units`) / 'autoattack' / 'reinit' / 'features'."""
    jobs = [("pretrain", s, "pretrain") for s in settings(config)]
    for setting, groups in batches(config).items():
        jobs += [("retrain", setting, b) for b in groups]
    jobs += [("evaluate", s, net) for s in settings(config) for net in evaluation_units(config, s)]
    jobs += [("evaluate_autoattack", s, "autoattack") for s in autoattack_settings(config)]
    jobs += [("reinit", s, "reinit") for s in reinit_settings(config)]
    jobs += [("sample_features", s, "features") for s in feature_settings(config)]
    return jobs


def job_counts(config: dict) -> dict[str, int]:
    counts = dict.fromkeys(GPU_RULES, 0)
    for rule, _, _ in gpu_jobs(config):
        counts[rule] += 1
    return counts


# --------------------------------------------------------------------------- validation beyond the schema


def validate(config: dict, recipes=(), root_exists=None) -> None:
    """Cross-references the JSON schema cannot express; raises ConfigError naming the key and the valid choices.

    `recipes`: the recipe presets (advlayers.recipes.PRESETS); `root_exists(dataset, root)`: a check of a
    dataset folder (advlayers.datasets.check_root), run before any job."""
    def error(key, value, valid):
        raise ConfigError(f"config error: {key} = {value!r} is not valid; valid choices: {', '.join(map(str, valid))}")

    for ds, dcfg in config["datasets"].items():
        if ds not in DATASETS:
            error("datasets", ds, DATASETS)
        for arch in dcfg["archs"]:
            if arch not in ARCHS:
                error(f"datasets.{ds}.archs", arch, ARCHS)
        if recipes and dcfg["recipe"] not in recipes:
            error(f"datasets.{ds}.recipe", dcfg["recipe"], recipes)
        if root_exists is not None and ds not in EMBEDDED_DATASETS:
            root_exists(ds, dcfg.get("root"))
    for ds in config["datasets"]:
        for name in (None, "reinit", "features"):
            ev = eval_params(config, ds, name)
            missing = [k for k in ("step_size", "steps") if ev["attack"] == "pgd" and k not in ev]
            if missing:
                where = f"datasets.{ds}.eval" if name is None else f"analyses.{name}.eval (over datasets.{ds}.eval)"
                error(where, ev, [f"a pgd evaluation needs {' and '.join(missing)}"])
    for direction in DIRECTIONS:
        if not config["cutoffs"].get(direction):
            error(f"cutoffs.{direction}", config["cutoffs"].get(direction), ["a non-empty list of cut-offs 0..6"])
    for fig, ds in (config.get("figures") or {}).items():
        if ds not in config["datasets"]:
            error(f"figures.{fig}", ds, list(config["datasets"]))
    for name in ("layer_cutoff", "module_subsets", "features"):
        a = analysis(config, name)
        if a and a["dataset"] not in config["datasets"]:
            error(f"analyses.{name}.dataset", a["dataset"], list(config["datasets"]))
        if a and a["arch"] not in config["datasets"][a["dataset"]]["archs"]:
            error(f"analyses.{name}.arch", a["arch"], config["datasets"][a["dataset"]]["archs"])
    a = analysis(config, "reinit")
    for ds in (a or {}).get("datasets", []):
        if ds not in config["datasets"]:
            error("analyses.reinit.datasets", ds, list(config["datasets"]))
        if a["arch"] not in config["datasets"][ds]["archs"]:
            error("analyses.reinit.arch", a["arch"], config["datasets"][ds]["archs"])
    for ds, dcfg in config["datasets"].items():
        for cell in (dcfg.get("autoattack") or {}).get("cells", []):
            found = {c for s, cs in cells(config).items() if s.dataset == ds for c in cs}
            if cell != "pretrained" and cell not in found:
                error(f"datasets.{ds}.autoattack.cells", cell, ["pretrained", *sorted(found)])
    a = analysis(config, "layer_cutoff")
    if a:
        n = LAYER_COUNTS[a["arch"]]
        for k in a["cutoffs"]:
            if not 0 <= k <= n:
                error("analyses.layer_cutoff.cutoffs", k, [f"0..{n} ({a['arch']} has {n} layers)"])
    a = analysis(config, "module_subsets")
    for mask in (a or {}).get("subsets") or []:
        mask_modules(mask)


def table_coordinates(config: dict, name: str) -> list[dict]:
    """Where each row of a figure table comes from: its coordinates (direction and cut-off, layer cut-off, or
    subset) and the cell evaluated there ('pretrained' where nothing is retrained)."""
    rows = []
    if name.startswith("cutoff_"):
        return [r for r in table_coordinates(config, "cutoff") if r["dataset"] == name.split("_", 1)[1]]
    if name == "cutoff":
        for dataset, dcfg in config["datasets"].items():
            for arch in dcfg["archs"]:
                for p in PRETRAININGS:
                    # the setting's own pretrained net: the "only pretrained" reference of the figure
                    rows.append({"dataset": dataset, "arch": arch, "pretraining": p, "direction": "none", "cutoff": None,
                                 "cell": "pretrained"})
                    for (d, c), cell in cutoff_cells(config, arch).items():
                        rows.append({"dataset": dataset, "arch": arch, "pretraining": p, "direction": d, "cutoff": c,
                                     "cell": cell or "pretrained"})
    elif name == "layer_cutoff":
        a = analysis(config, name)
        for p in analysis_pretrainings(config, name):
            for k, cell in {0: None, **layer_cutoff_cells(config, a["arch"])}.items():
                rows.append({"dataset": a["dataset"], "arch": a["arch"], "pretraining": p,
                             "direction": a.get("direction", "before"), "layer_cutoff": k, "cell": cell or "pretrained"})
    elif name == "module_subsets":
        a = analysis(config, name)
        for p in analysis_pretrainings(config, name):
            for mask, cell in {"000000": None, **module_subset_cells(config)}.items():
                rows.append({"dataset": a["dataset"], "arch": a["arch"], "pretraining": p, "subset": mask,
                             "cell": cell or "pretrained"})
    else:
        raise ConfigError(f"table {name!r} has no grid coordinates; valid: cutoff, layer_cutoff, module_subsets")
    return rows


# --------------------------------------------------------------------------- dataset folders (checked before any job)

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
LAYOUTS = {
    "cifar10": f"<root>/{CIFAR_DIR}/ with data_batch_1..5, test_batch, batches.meta (torchvision's CIFAR10 layout)",
    "imagenette": "an imagenette2*.tgz archive, its extracted folder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) "
    "or that folder's parent (imagenette2-320 or full size: the paper trains at 224 px)",
    "imagenet": "<root>/train/<class>/* and <root>/val/<class>/* (ImageFolder layout, val sorted into classes)",
}


def check_root(dataset: str, root) -> None:
    """One-line ConfigError unless `root` looks like `dataset`'s download (a cheap look at the layout; the
    data job verifies the files themselves). The workflow cannot download: the message says what to put there."""
    import os

    key = f"datasets.{dataset}.root"
    if root is None:
        raise ConfigError(f"config error: {key} is not set; point it at {LAYOUTS[dataset]}")
    path = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.exists(path):
        raise ConfigError(f"config error: {key} = {root!r} does not exist; expected {LAYOUTS[dataset]}")
    if dataset == "cifar10":
        folder = path if os.path.isfile(os.path.join(path, "batches.meta")) else os.path.join(path, CIFAR_DIR)
        missing = [f for f in CIFAR_FILES if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise ConfigError(f"config error: {key} = {root!r} lacks {', '.join(missing)}; expected {LAYOUTS[dataset]}")
    elif dataset == "imagenette":
        if os.path.isfile(path):
            return
        entries = os.listdir(path)
        if not ({"train", "val"} <= set(entries) or any(e.startswith("imagenette2") for e in entries)):
            raise ConfigError(f"config error: {key} = {root!r} holds neither train/ and val/ nor an imagenette2* "
                              f"folder or archive; expected {LAYOUTS[dataset]}")
    elif dataset == "imagenet":
        missing = [s for s in ("train", "val") if not os.path.isdir(os.path.join(path, s))]
        if missing:
            raise ConfigError(f"config error: {key} = {root!r} lacks {'/ and '.join(missing)}/; expected "
                              f"{LAYOUTS[dataset]}")


def paper_figure(config: dict, stem: str) -> str:
    """The paper figure a figure file reproduces ("Fig. 2" .. "Fig. 8"; report sections use these names)."""
    if stem.startswith("cutoff_"):
        dataset = stem.split("_", 1)[1]
        mapped = [f for f, d in (config.get("figures") or {}).items() if d == dataset]
        return f"Fig. {mapped[0][3:]}" if mapped else f"Fig. 2-4 ({dataset})"
    if stem.startswith("features_") or stem == "feature_divergence":
        return "Fig. 8"
    return {"layer_cutoff": "Fig. 5", "module_subsets": "Fig. 6", "reinit": "Fig. 7"}[stem]
