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


def eval_params(dataset):
    cfg = dict(dataset_config(dataset)["eval"])
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
