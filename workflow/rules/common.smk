"""Config validation and the helpers every stage uses; the grid itself is `advlayers.grid` (one source)."""

import ast
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

REPO = Path(workflow.basedir)
SRC = REPO / "src"
sys.path.insert(0, str(SRC))  # this checkout's library; grid and recipes import no torch (fast DAG building)

from advlayers import grid  # noqa: E402
from advlayers.grid import Setting  # noqa: E402
from advlayers.recipes import PRESETS  # noqa: E402

# --------------------------------------------------------------------------- config validation
# JSON schema first (types, unknown keys, enums, defaults), then names, cross-references and dataset folders,
# all before any job runs.

validate(config, "../../config/schema.yaml")
try:
    grid.validate(config, tuple(PRESETS), root_exists=grid.check_root)
except grid.ConfigError as e:
    raise WorkflowError(str(e)) from None

SEEDS = grid.seeds(config)
BATCHES = grid.batches(config)


def setting(wc):
    return Setting(wc.dataset, wc.arch, int(wc.seed), wc.pretraining)



def config_error(f):
    """An input/params function of the wildcards that turns a grid ConfigError into a one-line WorkflowError."""

    def wrapped(wildcards):
        try:
            return f(wildcards)
        except grid.ConfigError as e:
            raise WorkflowError(str(e)) from None

    return wrapped


def resources_of(stage, key, default):
    return lambda wc: grid.resources(config, wc.dataset, stage, key, default)


# --------------------------------------------------------------------------- library dependencies
# Snakemake does not see library changes: every rule lists the library files its script imports (and,
# transitively, theirs; read from the source, so the list cannot drift) as inputs, so a changed file reruns
# exactly the jobs that use it.


def _imported_modules(path):
    """advlayers modules that the file imports (`from . import x`, `from .x import y`, `from advlayers.x ...`)."""
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        package = node.module or ""
        if node.level == 1 or package.split(".")[0] == "advlayers":
            inner = package.split(".", 1)[1] if package.startswith("advlayers.") else ("" if package == "advlayers" else package)
            if inner:
                found.add(inner.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return {m for m in found if (SRC / "advlayers" / f"{m}.py").is_file()}


def library(rule_name):
    """The library files the rule's script (workflow/scripts/<rule>.py) runs."""
    seen, todo = set(), sorted(_imported_modules(REPO / "workflow" / "scripts" / f"{rule_name}.py"))
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo += sorted(_imported_modules(SRC / "advlayers" / f"{mod}.py"))
    return [os.path.relpath(SRC / "advlayers" / f"{m}.py") for m in sorted(seen)]


def state_dir(wc):
    """Resume states of a training job: outside its outputs, which Snakemake deletes when a job fails."""
    return f"results/.state/{wc.dataset}/{wc.arch}/seed{wc.seed}"


# --------------------------------------------------------------------------- inputs of evaluation and figure jobs


def evaluated_members(wc):
    """(setting, members) of an evaluation job: 'pretrain' and the batch ids it evaluates."""
    pretraining = wc.net.split("_")[1]
    s = Setting(wc.dataset, wc.arch, int(wc.seed), pretraining)
    return s, grid.evaluation_members(config, s, wc.net)


def evaluated(wc):
    """The checkpoint file (a pretrained net) and batch folders (retrained cells) an evaluation job reads."""
    s, members = evaluated_members(wc)
    return [grid.pretrained_path(s) if m == "pretrain" else grid.batch_dir(s, m) for m in members]


def evaluated_checkpoints(wc):
    """{cell: checkpoint file} of an evaluation job; each checkpoint's metadata must name that cell."""
    s, members = evaluated_members(wc)
    cells = [c for m in members for c in (["pretrained"] if m == "pretrain" else BATCHES[s][m])]
    return grid.net_checkpoints(config, s, cells)


def autoattack_nets(wc):
    """Pretrained file and batch folders holding the nets a setting evaluates with AutoAttack."""
    s = setting(wc)
    files = set()
    for cell in grid.autoattack_cells(config, s):
        files.add(grid.pretrained_path(s) if cell == "pretrained" else grid.batch_dir(s, grid.batch_of(config, s, cell)))
    return sorted(files)


def figure_inputs(wc):
    """A figure is drawn from its table, or (t-SNE/UMAP/TriMap panels) from the embeddings of every net."""
    if wc.figure.startswith("features_"):
        method = wc.figure.split("_", 1)[1]
        return [grid.features_path(s, f"_{method}") for s in grid.feature_settings(config)]
    return [grid.table_path(grid.figure_table(wc.figure))]


def figure_info(wc):
    """What a figure says about the run that made it (titles, captions, axes): config values only."""
    name = wc.figure
    if name.startswith("cutoff_"):
        dataset = name.split("_", 1)[1]
        return {"kind": "cutoff", "dataset": dataset, "archs": grid.dataset_config(config, dataset)["archs"],
                "width": grid.width(config, dataset), "attack": grid.eval_params(config, dataset),
                "recipe": grid.recipe_params(config, dataset), "retrain_recipe": grid.recipe_params(config, dataset, True),
                "seeds": SEEDS}
    kind = "features" if name.startswith("features_") else name
    a = grid.analysis(config, "features" if kind in ("features", "feature_divergence") else kind)
    dataset = a.get("dataset") or a["datasets"][0]
    info = {"kind": kind, "dataset": dataset, "arch": a["arch"], "width": grid.width(config, dataset),
            "attack": grid.eval_params(config, dataset, "reinit" if kind == "reinit" else None),
            "analysis": a, "seeds": SEEDS}
    if kind == "layer_cutoff":
        info["module_layers"] = list(grid.MODULE_LAYERS[a["arch"]])
    if kind == "features":
        info["method"] = name.split("_", 1)[1]
    return info
