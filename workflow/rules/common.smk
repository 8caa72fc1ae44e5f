"""Config validation, helpers and wildcard constraints shared by every stage."""

import ast
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

REPO = Path(workflow.basedir)
SRC = REPO / "src" / "advlayers"

# --------------------------------------------------------------------------- config validation
# JSON schema first (types, unknown keys, enums, cut-offs 0..6, defaults), then the names against the library.

validate(config, "../../config/schema.yaml")


def _library_names(mod, variable):
    """Names the library defines (a tuple, or a dict's keys), read without importing torch."""
    tree = ast.parse((SRC / f"{mod}.py").read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == variable:
            value = node.value
            if isinstance(value, ast.Dict):
                return [ast.literal_eval(k) for k in value.keys]
            return list(ast.literal_eval(value))
    raise WorkflowError(f"cannot find {variable} in {SRC / mod}.py")


ARCHS = _library_names("models", "ARCHS")
DATASETS = _library_names("datasets", "DATASETS")
RECIPES = _library_names("training", "PRESETS")
PRETRAININGS = ("conventional", "adversarial")
DIRECTIONS = ("before", "after")
# Paper §4: adversarial retraining of the conventionally pretrained net, conventional retraining of the
# adversarially pretrained one, before or after the cut-off.
SETTINGS = [(p, d) for p in PRETRAININGS for d in DIRECTIONS]


def _config_error(key, value, valid):
    raise WorkflowError(f"config error: {key} = {value!r} is not valid; valid choices: {', '.join(map(str, valid))}")


for _ds, _dcfg in config["datasets"].items():
    if _ds not in DATASETS:
        _config_error("datasets", _ds, DATASETS)
    for _arch in _dcfg["archs"]:
        if _arch not in ARCHS:
            _config_error(f"datasets.{_ds}.archs", _arch, ARCHS)
    if _dcfg["recipe"] not in RECIPES:
        _config_error(f"datasets.{_ds}.recipe", _dcfg["recipe"], RECIPES)
for _fig, _ds in config.get("figures", {}).items():
    if _ds not in config["datasets"]:
        _config_error(f"figures.{_fig}", _ds, list(config["datasets"]))


def analysis(name):
    """An analysis's config section (layer_cutoff, combinations, reinit, features), or None if not configured."""
    return config.get("analyses", {}).get(name)


def dataset_config(dataset):
    return config["datasets"][dataset]


def resources_of(dataset, stage, key, default):
    return dataset_config(dataset).get("resources", {}).get(stage, {}).get(key, default)


def job_threads():
    return config.get("resources", {}).get("threads", 1)


def job_gpus():
    return config.get("resources", {}).get("gpu", 0)


# --------------------------------------------------------------------------- library dependencies
# Snakemake does not see library changes: every rule lists the library files it runs as inputs (the modules
# its script imports and, transitively, theirs), so a changed file reruns exactly the jobs that use it.

LIBRARY_ENTRY = {
    "prepare_data": ["datasets"],
    "pretrain": ["training", "checkpoints", "datasets", "models"],
    "retrain": ["training", "checkpoints", "datasets", "models"],
    "evaluate": ["evaluation", "attacks", "checkpoints", "datasets"],
    "table": ["tables"],
    "figure": ["plots"],
    "retrain_layers": ["training", "checkpoints", "datasets", "models", "analyses"],
    "reinit": ["analyses", "evaluation", "attacks", "checkpoints", "datasets"],
    "analysis_table": ["tables", "analyses"],
    "analysis_figure": ["analysis_plots", "analyses", "models"],
    "sample_features": ["features", "attacks", "checkpoints", "datasets"],
    "embed_features": ["features"],
    "feature_divergence": ["features"],
}


def _imported_modules(mod):
    """advlayers modules that `mod` imports (`from . import x`, `from .x import y`, `from advlayers.x ...`)."""
    found = set()
    for node in ast.walk(ast.parse((SRC / f"{mod}.py").read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        package = node.module or ""
        if node.level == 1 or package.split(".")[0] == "advlayers":
            inner = package.split(".", 1)[1] if package.startswith("advlayers.") else ("" if package == "advlayers" else package)
            if inner:
                found.add(inner.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return {m for m in found if (SRC / f"{m}.py").is_file()}


def library(stage):
    seen, todo = set(), list(LIBRARY_ENTRY[stage])
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo += sorted(_imported_modules(mod))
    return [os.path.relpath(SRC / f"{m}.py") for m in sorted(seen)]


# --------------------------------------------------------------------------- paths


def recipe_params(dataset, retrain=False):
    """Preset name and overrides, passed as params: a changed value reruns the jobs that use it."""
    cfg = dataset_config(dataset)
    overrides = dict(cfg.get("recipe_overrides", {}))
    if retrain:
        overrides.update(cfg.get("retrain_overrides", {}))
    return {"name": cfg["recipe"], "overrides": dict(sorted(overrides.items()))}  # key order is no change


def eval_params(dataset, analysis_name=None):
    """The dataset's evaluation settings, with an analysis's `eval` overrides (smaller demo grids) on top."""
    cfg = dict(dataset_config(dataset)["eval"])
    if analysis_name is not None:
        cfg.update(analysis(analysis_name).get("eval", {}))
    cfg.setdefault("n", None)
    cfg.setdefault("restarts", 1)
    cfg.setdefault("batch_size", 256)
    return dict(sorted(cfg.items()))


def data_file(dataset):
    ext = "json" if dataset in ("imagenette", "imagenet") else "pt"
    return f"results/data/{dataset}.{ext}"


def checkpoint_names(dataset):
    """Every checkpoint of the cut-off experiment for `dataset`, as (arch, name) pairs."""
    names = []
    for arch in dataset_config(dataset)["archs"]:
        names += [(arch, f"pretrain_{p}") for p in PRETRAININGS]
        for p, d in SETTINGS:
            names += [(arch, f"retrain_{p}_{d}{c}") for c in config["cutoffs"][d]]
    return names


def evaluations(dataset):
    return [f"results/evaluations/{dataset}/{arch}/{name}.json" for arch, name in checkpoint_names(dataset)]


def figure_files(dataset):
    return [f"results/figures/cutoff_{dataset}.{ext}" for ext in ("png", "pdf")]


def named_figure(name):
    def inputs(wildcards):
        figures = config.get("figures", {})
        if name not in figures:
            raise WorkflowError(f"{name} is not mapped to a dataset in config 'figures' (mapped: {', '.join(figures) or 'none'})")
        return figure_files(figures[name])

    return inputs


def opposite(pretraining):
    """The retraining mode of a setting: the opposite of its pretraining (paper §3)."""
    return "adversarial" if pretraining == "conventional" else "conventional"


# --------------------------------------------------------------------------- analyses (paper §5-6)


# Layers per arch (conv/linear with its BatchNorm, advlayers.models.layers): bounds the per-layer cut-offs before
# any job runs; tests/test_workflow.py checks these against the library.
LAYER_COUNTS = {"resnet18": 21, "resnet50": 54, "vgg11_bn": 11, "vgg16_bn": 16}


for _name in ("layer_cutoff", "combinations", "features"):
    _cfg = analysis(_name)
    if _cfg and _cfg["dataset"] not in config["datasets"]:
        _config_error(f"analyses.{_name}.dataset", _cfg["dataset"], list(config["datasets"]))


for _ds in (analysis("reinit") or {}).get("datasets", []):
    if _ds not in config["datasets"]:
        _config_error("analyses.reinit.datasets", _ds, list(config["datasets"]))


if analysis("layer_cutoff"):
    _n = LAYER_COUNTS[analysis("layer_cutoff")["arch"]]
    for _c in analysis("layer_cutoff")["cutoffs"]:
        if not 0 <= _c <= _n:
            _config_error("analyses.layer_cutoff.cutoffs", _c, [f"0..{_n} ({analysis('layer_cutoff')['arch']} has {_n} layers)"])


def analysis_recipe(name, dataset):
    """Retraining recipe of an analysis: the dataset's retraining recipe plus the analysis's overrides."""
    params = recipe_params(dataset, retrain=True)
    overrides = {**params["overrides"], **analysis(name).get("retrain_overrides", {})}
    return {"name": params["name"], "overrides": dict(sorted(overrides.items()))}


def analysis_of(name):
    """Which analysis a checkpoint name belongs to (its evaluation settings may be smaller)."""
    return {"layers": "layer_cutoff", "subset": "combinations"}.get(name.split("_")[0])


def layer_cutoff_evaluations(wildcards=None):
    cfg = analysis("layer_cutoff")
    base = f"results/evaluations/{cfg['dataset']}/{cfg['arch']}"
    return [f"{base}/layers_conventional_before{c}.json" for c in cfg["cutoffs"]] + [
        f"{base}/pretrain_{p}.json" for p in PRETRAININGS
    ]


def combination_evaluations(wildcards=None):
    cfg = analysis("combinations")
    base = f"results/evaluations/{cfg['dataset']}/{cfg['arch']}"
    return [f"{base}/subset_conventional_{mask}.json" for mask in cfg.get("subsets") or MODULE_SUBSETS]


# All 64 subsets of m0..m5 as sets (bitmask i-th character = module m_i), the empty and the full set included.


MODULE_SUBSETS = ["".join("1" if mask >> i & 1 else "0" for i in range(6)) for mask in range(64)]


def reinit_results(wildcards=None):
    cfg = analysis("reinit")
    return [f"results/reinit/{ds}/{cfg['arch']}/{p}.parquet" for ds in cfg["datasets"] for p in PRETRAININGS]


def feature_params():
    cfg = analysis("features")
    return {k: v for k, v in sorted(cfg.items()) if k not in ("methods", "embedding", "divergence")}


def feature_base():
    cfg = analysis("features")
    return f"results/features/{cfg['dataset']}/{cfg['arch']}"


def analysis_figures(name):
    """Figure files of one analysis (empty if the config has none)."""
    if not analysis(name):
        return []
    stems = {
        "layer_cutoff": ["layer_cutoff"],
        "combinations": ["combinations"],
        "reinit": ["reinit"],
        "features": [f"features_{m}" for m in analysis("features")["methods"]] + ["feature_divergence"],
    }[name]
    return [f"results/figures/{s}.{ext}" for s in stems for ext in ("png", "pdf")]


def table_files():
    """Every result table of the config: the cut-off table and those of the configured analyses."""
    analyses = (("layer_cutoff", "layer_cutoff"), ("combinations", "combinations"), ("reinit", "reinit"),
                ("feature_divergence", "features"))
    return ["results/tables/cutoff.parquet"] + [f"results/tables/{t}.parquet" for t, a in analyses if analysis(a)]
