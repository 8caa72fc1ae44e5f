"""Config validation and the helpers every stage uses. The grid itself (what a config expands to, and where
every artifact lives) is `advlayers.grid`: the rules only ask it."""

import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

REPO = Path(workflow.basedir)
SRC = REPO / "src"
sys.path.insert(0, str(SRC))  # this checkout's library; the grid imports no torch (fast DAG building)

from advlayers.grid import conf, layout, plan, rebuild, sharding, validate  # noqa: E402
from advlayers.grid.vocabulary import MODULE_LAYERS, ConfigError, Setting  # noqa: E402
from advlayers.tools.sizing import Runtimes  # noqa: E402  (torch-free: the cost model sizes the time limits)
from advlayers.tools.sources import library_files, module_files  # noqa: E402

# --------------------------------------------------------------------------- config validation
# The schema first (types, unknown keys, enums, defaults), then names, cross-references and dataset folders,
# all before any job runs.

if os.path.exists(layout.RESULTS) and not os.path.isdir(layout.RESULTS):
    raise WorkflowError(
        f"{os.path.abspath(layout.RESULTS)} is a file, not a folder: the workflow writes every artifact "
        "under results/ (move the file away)"
    )


# A missing dataset folder does not stop a dry run (users list and price the jobs before downloading ~150 GB);
# a real run stops on it in `onstart`, which Snakemake runs before the first job and never in a dry run.
MISSING_ROOTS = []


def note_missing_root(dataset, root):
    try:
        validate.check_root(dataset, root)
    except ConfigError as e:
        MISSING_ROOTS.append(str(e))
        logger.warning(f"{e} (a dry run goes on; a real run stops before any job)")


try:
    validate.apply_schema(config)
    validate.check(config, root_exists=note_missing_root)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

# A `package.module:function` arch builder is imported from the config file's folder unless `archs.<a>.path`
# names another: the jobs get the folder in their config.
validate.fill_arch_paths(config, workflow.configfiles)


# Each GPU job's runtime: the cost model's estimate x cluster.safety_factor within cluster.max_runtime, unless the
# config sets it (advlayers.tools.sizing). A job that cannot fit (no resume state) is, like a missing dataset,
# a warning in a dry run and an error before the first job of a real run.
try:
    RUNTIMES = Runtimes(config)
    TOO_LONG = RUNTIMES.problems()
except (ConfigError, ValueError) as e:
    raise WorkflowError(str(e)) from None
for problem in TOO_LONG:
    logger.warning(f"job too long for the partition: {problem} (a dry run goes on; a real run stops before any job)")


onstart:
    if MISSING_ROOTS or TOO_LONG:
        raise WorkflowError("; ".join(MISSING_ROOTS + [f"job too long for the partition: {p}" for p in TOO_LONG]))


SEEDS = conf.seeds(config)
GROUPS = plan.groups(config)


def setting(wc):
    return Setting(wc.dataset, wc.arch, int(wc.seed), wc.pretraining)


def config_error(f):
    """An input/params function of the wildcards that turns a grid ConfigError into a one-line WorkflowError."""

    def wrapped(wildcards):
        try:
            return f(wildcards)
        except ConfigError as e:
            raise WorkflowError(str(e)) from None

    return wrapped


def resources_of(rule, key, default):
    return lambda wc: conf.resources(config, wc.dataset, rule, key, default)


def runtime_of(rule):
    """Runtime (minutes) of a training job: sized once per DAG (`RUNTIMES`); a retry resumes from its state."""
    return retry_runtime(rule, retried=False)


def retry_runtime(rule, retried=True):
    """Runtime of a job that keeps no resume state: a retry after a time-out gets a longer limit, up to the
    partition's cluster.max_runtime."""

    def runtime(wc, attempt):
        try:
            return RUNTIMES.retry(rule, dict(wc.items()), attempt if retried else 1)
        except ConfigError as e:
            raise WorkflowError(str(e)) from None

    return runtime


def log_of(rule):
    """The log of a per-net rule's job (`layout.JOBS`)."""
    return layout.log_path(rule, layout.JOBS[rule])


def benchmark_of(rule):
    return layout.benchmark_path(rule, layout.JOBS[rule])


# --------------------------------------------------------------------------- library dependencies
# Snakemake does not see library changes: every rule lists the library files its script imports (and,
# transitively, theirs, with their packages' __init__.py; read from the source, so the list cannot drift) as
# inputs, so a changed file reruns exactly the jobs that use it.


def library(rule_name, without=()):
    """The library files the rule's script (workflow/scripts/<rule>.py) runs, relative to the working directory
    (`without`: modules not followed, see `training_library`)."""
    script = REPO / "workflow" / "scripts" / f"{rule_name}.py"
    return [os.path.relpath(p) for p in library_files(SRC, script, without=tuple(without))]


# The per-epoch held-out evaluation runs inside training jobs only where eval_each_epoch is on: there a change to
# the evaluation code reruns the dataset's training jobs; elsewhere training does not depend on it (an edit of
# core/evaluation.py reruns evaluations, not every training job).
HELD_OUT_EVALUATION = "advlayers.core.epoch_eval"


def training_library(rule_name):
    """`library(rule_name)` of a training rule, with the held-out evaluation's files for datasets that run it."""
    base = library(rule_name, without=(HELD_OUT_EVALUATION,))
    held_out = sorted(set(os.path.relpath(p) for p in module_files(SRC, HELD_OUT_EVALUATION)) - set(base))
    return lambda wc: base + (held_out if conf.epoch_eval_settings(config, wc.dataset) else [])


# --------------------------------------------------------------------------- inputs of evaluation and figure jobs


def evaluated_nets(wc):
    """The outputs of the jobs whose nets an evaluation reads: pretrained files and retraining group folders."""
    return plan.evaluated_job_outputs(config, setting(wc), wc.unit)


def evaluated_checkpoints(wc):
    """{cell: checkpoint file} of an evaluation job; each checkpoint's metadata must name that cell."""
    return plan.evaluated_checkpoints(config, setting(wc), wc.unit)


def figure_info(wc):
    """What a figure says about the run that made it (titles, captions, axes): config values only."""
    name, kind = wc.figure, layout.figure_kind(wc.figure)
    if kind == "cutoff":
        dataset = layout.figure_dataset(name)
        return {
            "kind": kind,
            "dataset": dataset,
            "archs": conf.dataset_config(config, dataset)["archs"],
            "width": conf.width(config, dataset),
            "attack": conf.eval_settings(config, dataset),
            "recipe": conf.recipe_params(config, dataset),
            "retrain_recipe": conf.recipe_params(config, dataset, True),
            "seeds": SEEDS,
        }
    if kind == layout.TRAINING_CURVES:
        info = {"kind": kind, "dataset": ", ".join(config["datasets"]), "seeds": SEEDS}
        held_out = {ds: conf.epoch_eval_settings(config, ds) for ds in config["datasets"]}
        held_out = {ds: s for ds, s in held_out.items() if s is not None}
        return {**info, "eval_each_epoch": held_out} if held_out else info
    section = "features" if layout.paper_figure(config, name) == "Fig. 8" else kind
    a = conf.analysis(config, section)
    dataset = a.get("dataset") or a["datasets"][0]
    info = {
        "kind": kind,
        "dataset": dataset,
        "arch": a["arch"],
        "width": conf.width(config, dataset),
        "attack": conf.eval_settings(config, dataset, "reinit" if kind == "reinit" else None),
        "analysis": a,
        "seeds": SEEDS,
    }
    if kind in ("layer_cutoff", "module_subsets"):  # the module boundaries; the subsets' captions count N from it
        info["module_layers"] = list(MODULE_LAYERS[a["arch"]])
    if kind == "features":
        info["method"] = layout.figure_method(name)
    return info
