"""Each GPU job's time limit (its SLURM `runtime`, minutes), sized by the cost model: one source for the
workflow's resources (workflow/rules/common.smk, at DAG time: this module imports no torch) and `advlayers cost`.

    runtime = datasets.<d>.resources.<stage>.runtime     when the config sets it (stage: pretrain, retrain,
                                                         evaluate; reinit, sample_features and AutoAttack use
                                                         evaluate's)
            = cluster.cpu_runtime                        when the config's device is not CUDA (the model prices a GPU)
            = ceil(estimate / GPUs x cluster.safety_factor), at least cluster.min_runtime, otherwise
    and never more than cluster.max_runtime, the partition's limit.

The estimate is `cost_model.jobs` with the reference throughputs, or the measured ones of `cluster.throughput`
(a YAML written by the preflight or `advlayers cost --measure`). A training job sized over the limit asks for the
limit and continues over several submissions (it resumes from results/.state); an evaluation-type job keeps no
state, so one sized over the limit is a config error (`problems`) - found before any job runs; an AutoAttack
evaluation is split into `datasets.<d>.autoattack.shards` jobs (each a slice of the images, merged exactly), and
the problem says how many shards would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..grid import conf, layout
from ..grid.vocabulary import ConfigError, Setting
from . import cost_model


# the config key that shortens each evaluation-type job
FEWER_IMAGES = {"evaluate": "datasets.{d}.eval.n", "evaluate_autoattack": "datasets.{d}.autoattack.n",
                "reinit": "analyses.reinit.eval.n", "sample_features": "analyses.features.n_images"}


@dataclass(frozen=True)
class Sized:
    """One GPU job of the grid, its estimate and the time limit it asks for."""

    job: cost_model.Job
    gpus: int
    wall_h: float  # estimated wall-clock hours on `gpus` GPUs of the reference (or measured) throughput
    needed_min: int  # ceil(wall x safety factor), at least min_runtime (config: the explicit runtime)
    runtime: int  # minutes asked for: needed_min, at most max_runtime
    source: str  # "model", "config" or "cpu" (cluster.cpu_runtime)

    @property
    def submissions(self) -> int:
        """Submissions a job needs at `runtime` minutes each (resumable training only continues past 1)."""
        return max(1, math.ceil(self.needed_min / self.runtime))

    @property
    def fits(self) -> bool:
        return self.needed_min <= self.runtime


def cluster(config: dict) -> dict:
    """The config's `cluster` section with the schema's defaults."""
    return conf.with_defaults(config.get("cluster"), "cluster")


def table(config: dict) -> dict:
    """The throughput table the config's jobs are sized with (`cluster.throughput`, else the reference)."""
    path = cluster(config).get("throughput")
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config error: cluster.throughput = {path!r} does not exist; expected a YAML "
                          "{dataset: {arch: images/s}} (the preflight's throughput.yaml, advlayers cost --measure) or null")
    try:
        return cost_model.load_throughput(path)
    except cost_model.CostModelError as e:
        raise ConfigError(f"config error: cluster.throughput: {e}") from None


def job_gpus(config: dict, job: cost_model.Job) -> int:
    gpus = max(1, conf.job_gpus(config))
    return max(1, conf.resources(config, job.dataset, "pretrain", "gpu", gpus)) if job.rule == "pretrain" else gpus


def size(config: dict, throughputs: dict | None = None) -> dict[tuple[str, str], Sized]:
    """{(rule, job name): Sized} of every GPU job of the config (`layout.job_name` names, as in the logs)."""
    c = cluster(config)
    on_gpu = str(config.get("device", "cpu")).startswith("cuda")
    out = {}
    for job in cost_model.jobs(config, table(config) if throughputs is None else throughputs, strict=False):
        gpus = job_gpus(config, job)
        wall_h = job.seconds / gpus / 3600
        explicit = conf.resources(config, job.dataset, job.rule, "runtime", None)
        if explicit is not None:
            needed, source = int(explicit), "config"
        elif not on_gpu:
            needed, source = int(c["cpu_runtime"]), "cpu"
        elif job.unpriced:  # an own dataset or arch: the model has no throughput for it
            raise ConfigError(f"config error: cannot size job {job.rule} {job.name}: {job.unpriced}; set "
                              f"datasets.{job.dataset}.resources.{conf.RESOURCE_SECTION[job.rule]}.runtime (minutes) "
                              "or cluster.throughput")
        else:
            needed = max(int(c["min_runtime"]), math.ceil(wall_h * 60 * c["safety_factor"]))
            source = "model"
        out[(job.rule, job.name)] = Sized(job, gpus, wall_h, needed, min(needed, int(c["max_runtime"])), source)
    return out


def problems(config: dict, sized: dict[tuple[str, str], Sized]) -> list[str]:
    """One line per job that cannot run within cluster.max_runtime: an evaluation-type job (no resume state) sized
    over it, or an explicit runtime above it."""
    c = cluster(config)
    out = []
    for s in sized.values():
        if s.fits or (s.job.rule in cost_model.RESUMABLE and s.source != "config"):
            continue
        section = conf.RESOURCE_SECTION[s.job.rule]
        if s.source == "config":
            out.append(f"datasets.{s.job.dataset}.resources.{section}.runtime = {s.needed_min} exceeds "
                       f"cluster.max_runtime = {c['max_runtime']} (job {s.job.rule} {s.job.name})")
        else:
            out.append(f"{s.job.rule} {s.job.name} is estimated at {s.wall_h:.1f} h, x {c['safety_factor']} = "
                       f"{s.needed_min} min, over cluster.max_runtime = {c['max_runtime']} min and it cannot resume: "
                       f"{_shorter(config, s, int(c['max_runtime']))}")
    return out


def _shorter(config: dict, s: Sized, limit: int) -> str:
    """How to make an evaluation-type job fit: more shards (AutoAttack), fewer images or a longer limit."""
    fewer = f"evaluate fewer images ({FEWER_IMAGES[s.job.rule].format(d=s.job.dataset)}) or raise the limit"
    if s.job.rule != "evaluate_autoattack":
        return fewer
    shard = layout.unit_shard(s.job.name)  # a shard job's name ends in its unit, '<unit>-s<i>of<k>'
    now = shard[2] if shard else 1
    wanted = math.ceil(s.needed_min * now / limit)  # the images split evenly (whole batches: check with cost)
    return f"split it into shards (datasets.{s.job.dataset}.autoattack.shards = {wanted} or more), {fewer}"


class Runtimes:
    """The workflow's view: a job's runtime from its wildcards, sized once per DAG."""

    def __init__(self, config: dict):
        self.config = config
        self.sized = size(config)
        self.limit = int(cluster(config)["max_runtime"])

    def problems(self) -> list[str]:
        return problems(self.config, self.sized)

    def of(self, rule: str, wildcards: dict) -> int:
        s = Setting(wildcards["dataset"], wildcards["arch"], int(wildcards["seed"]), wildcards["pretraining"])
        name = layout.job_name(rule, s, **{k: v for k, v in wildcards.items() if k in ("group", "unit")})
        if (rule, name) not in self.sized:
            raise ConfigError(f"config error: {rule} job {name} is not part of this config's grid (advlayers.grid.plan)")
        return self.sized[(rule, name)].runtime

    def retry(self, rule: str, wildcards: dict, attempt: int) -> int:
        """A job without resume state gets a longer limit after a time-out, never more than the partition's."""
        return min(self.of(rule, wildcards) * attempt, self.limit)
