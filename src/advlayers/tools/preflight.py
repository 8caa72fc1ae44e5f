"""The preflight checklist: did the paper's whole DAG, run at toy size on a cluster, work as it will have to?

    snakemake --profile slurm preflight --configfile config/paper.yaml config/preflight.yaml

`config/preflight.yaml` keeps every rule, dataset, arch and analysis of `config/paper.yaml` at toy size (1
epoch on 256 images, PGD-10 on 64, ImageNet pretraining on 2 GPUs); the workflow's `preflight` rule then calls
`checklist` and writes results/preflight.md and results/throughput.yaml. Four checks, each ok or NOT OK:

(a) device and precision: what every checkpoint (pretrained, initial, retrained cells) and every evaluation
    recorded in its provenance, grouped. NOT OK when one is unreadable, ran on another kind of device than
    the config's `device`, or was trained without a recorded precision.
(b) DDP: every pretrained checkpoint with `world_size` > 1 holds one parameter digest per rank
    (`rank_digests`) and they are all equal (the ranks ended with the same weights); a pretraining configured
    with `gpu` > 1 that ran in one process is NOT OK too.
(c) every rule produced its outputs: the files `advlayers.grid` expands the config to (data, checkpoints,
    every retrained cell's file inside its batch folder, evaluation records and outcomes, AutoAttack, Fig. 7
    and Fig. 8 parquets, rebuild markers, tables, figures, claims), missing ones listed per rule.
(d) training throughput per (dataset, arch) from the pretraining jobs, in the units `advlayers cost
    --throughput` reads (``{dataset: {arch: images_per_s}}``, clean-training images/s of one GPU at width 1,
    in the cost model's fp32 reference units): images processed = epochs x the training images (train_subset,
    at most the split's `advlayers.tools.cost.SPLIT_SIZES`, in whole batches) x `advlayers.tools.cost.train_units` (an
    adversarial epoch costs k + 1 clean steps), divided by the seconds and the job's GPUs, times width^2,
    divided by the cost model's bf16 speed-up for recipes with precision auto/bf16 (which `cost` multiplies
    back): so `cost --throughput` reproduces the measured time. Two timings: the training loop (the epochs'
    `seconds` in the checkpoint's history: data loading and augmentation inside the loop included, job
    start-up excluded) goes to throughput.yaml; the job's wall clock (the Snakemake benchmark file's `s`:
    Python, CUDA and data start-up, checkpoint writing) is shown beside it. At toy size both are lower bounds
    (one or two steps with warm-up); `advlayers cost --measure` times steady-state steps.

Checkpoint metadata is read without the weights (a memory-mapped load: the preflight's VGG-16 checkpoints
are ~0.5 GB each); `advlayers verify` checks the weights themselves.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from pathlib import Path

from ..core.recipes import Recipe, get_recipe
from ..grid import conf, layout, plan, sharding
from ..grid import vocabulary as vocab
from . import cost

# The rules of the workflow's DAG that make files (targets and `verify` aside), in pipeline order.
RULES = ("prepare_data", "pretrain", "retrain", "evaluate", "evaluate_autoattack", "merge_shards", "reinit",
         "sample_features", "embed_features", "feature_divergence", "table_rebuild_marker", "table", "figure", "claims")
KINDS = ("pretrained", "initial", "retrained")
OK, NOT_OK = "ok", "NOT OK"


def pretrain_benchmark(setting: vocab.Setting) -> str:
    """The Snakemake benchmark file of a pretraining job (workflow/rules/training.smk)."""
    return layout.benchmark_path("pretrain", layout.job_id(setting))


# --------------------------------------------------------------------------- what the config implies


def expected_outputs(config: dict) -> dict[str, list[str]]:
    """{rule: files its jobs write}, every rule of `RULES` ([] where the config runs none of its jobs). A
    retraining job's entry is its group folder followed by the file of every cell in it."""
    out: dict[str, list[str]] = {rule: [] for rule in RULES}
    out["prepare_data"] = [layout.data_path(d) for d in config["datasets"]]
    for s in plan.settings(config):
        out["pretrain"] += [layout.pretrained_path(s), layout.initial_path(s)]
        out["evaluate"] += [p for unit in plan.evaluation_units(config, s) for p in layout.evaluation_paths(s, unit)]
    for s, groups in plan.groups(config).items():
        for group, cells in groups.items():
            out["retrain"] += [layout.group_dir(s, group)] + [layout.cell_path(s, group, c) for c in cells]
    for s in plan.autoattack_settings(config):  # a sharded evaluation: its shards, and their merge the unit's files
        units = sharding.shard_units(config, s.dataset, layout.AUTOATTACK_UNIT)
        out["evaluate_autoattack"] += [p for unit in units for p in layout.evaluation_paths(s, unit)]
        if len(units) > 1:
            out["merge_shards"] += list(layout.evaluation_paths(s, layout.AUTOATTACK_UNIT))
    out["reinit"] = [layout.reinit_path(s) for s in plan.reinit_settings(config)]
    features = conf.analysis(config, "features") or {}
    for s in plan.feature_settings(config):
        out["sample_features"].append(layout.activations_path(s))
        out["embed_features"] += [layout.embedding_path(s, m) for m in features.get("methods", [])]
        out["feature_divergence"].append(layout.divergence_path(s))
    tables = plan.tables(config)
    out["table_rebuild_marker"] = [layout.path("rebuild_marker", table=t) for t in tables]
    out["table"] = [layout.table_path(t) for t in tables]
    out["figure"] = [p for stem in plan.figures(config) for p in layout.figure_paths(stem)]
    out["claims"] = [layout.path("claims_table"), layout.path("claims")]
    return out


def checkpoint_files(config: dict) -> list[tuple[str, vocab.Setting, str]]:
    """(kind, setting, path) of every checkpoint: pretrained, initial, and each retrained cell."""
    found = []
    for s in plan.settings(config):
        found += [("pretrained", s, layout.pretrained_path(s)), ("initial", s, layout.initial_path(s))]
    for s, cells in plan.cells(config).items():
        found += [("retrained", s, plan.cell_path(config, s, c)) for c in cells]
    return found


# --------------------------------------------------------------------------- reading what the jobs left


def read_checkpoint_meta(path) -> dict:
    """A checkpoint's payload without its weights (memory-mapped: the tensors are never read)."""
    import torch

    from ..core.checkpoints import FORMAT

    payload = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"not an advlayers checkpoint of format {FORMAT!r} (found {found!r})")
    return {k: v for k, v in payload.items() if k != "model"}


def read_benchmark_seconds(path) -> float:
    """Wall-clock seconds (column `s`, the mean over repeats) of a Snakemake benchmark file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError("no `s` column")
    return sum(float(r["s"]) for r in rows) / len(rows)


def _not_ok(problems: list[str], limit: int = 50) -> list[str]:
    """Markdown lines of the problems (the first `limit`, then how many more)."""
    lines = [""] * bool(problems) + [f"- NOT OK: {p}" for p in problems[:limit]]
    return lines + [f"- ... and {len(problems) - limit} more"] * (len(problems) > limit)


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


# --------------------------------------------------------------------------- the checks


@dataclasses.dataclass
class Check:
    title: str
    ok: bool
    summary: str
    lines: list[str]

    def markdown(self, letter: str) -> str:
        return "\n".join([f"## ({letter}) {self.title}: {OK if self.ok else NOT_OK}", "", self.summary, "",
                          *self.lines, ""])


def _device_check(config: dict, root: Path, metas: dict[str, dict], errors: dict[str, str]) -> Check:
    want = str(config.get("device", "cpu")).split(":")[0]
    groups: dict[tuple, Counter] = {}
    problems, auto_fp32 = [], 0
    for kind, s, path in checkpoint_files(config):
        if path not in metas:
            continue
        prov = metas[path].get("provenance") or {}
        meta = metas[path].get("meta") or {}
        device = prov.get("device_name") or "?"
        precision = prov.get("precision") or meta.get("precision") or ""
        key = (device, precision or ("-" if kind == "initial" else "?"), prov.get("torch_version", "?"),
               prov.get("cuda_version") or "-")
        groups.setdefault(key, Counter())[kind] += 1
        if device.split(":")[0] != want:
            problems.append(f"{path}: made on `{device}`, the config's device is `{config.get('device')}`")
        if kind != "initial" and not precision:
            problems.append(f"{path}: no precision recorded")
        recipe = metas[path].get("recipe") or {}
        auto_fp32 += device.startswith("cuda") and precision == "fp32" and recipe.get("precision") == "auto"
    evaluated: Counter = Counter()
    outputs = expected_outputs(config)
    for path in outputs["evaluate"] + outputs["evaluate_autoattack"]:
        if not path.endswith(".json") or not (root / path).is_file():
            continue
        try:
            records = json.loads((root / path).read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{path}: unreadable evaluation record ({_one_line(e)})")
            continue
        for r in records:
            device = (r.get("provenance") or {}).get("eval_device_name") or "?"
            evaluated[device] += 1
            if device.split(":")[0] != want:
                problems.append(f"{path} ({r.get('cell')}): evaluated on `{device}`, the config's device is "
                                f"`{config.get('device')}`")
    problems += [f"{p}: unreadable checkpoint ({e})" for p, e in errors.items()]
    lines = ["| device | precision | torch | CUDA | pretrained | initial | retrained cells |",
             "|---|---|---|---|---:|---:|---:|"]
    for (device, precision, torch_v, cuda_v), n in sorted(groups.items()):
        lines.append(f"| {device} | {precision} | {torch_v} | {cuda_v} | {n['pretrained']} | {n['initial']} | "
                     f"{n['retrained']} |")
    if evaluated:
        lines += ["", "| evaluated on | nets |", "|---|---:|"]
        lines += [f"| {d} | {n} |" for d, n in sorted(evaluated.items())]
    notes = []
    if len({k[0] for k in groups}) > 1:
        notes.append(f"- note: the jobs ran on {len({k[0] for k in groups})} different devices")
    if auto_fp32:
        notes.append(f"- note: {auto_fp32} net(s) trained in fp32 on a GPU with `precision: auto`: no native bf16 "
                     "there (compute capability < 8.0), slower than the cost model assumes for `auto`")
    lines += [""] * bool(notes) + notes + _not_ok(problems)
    n = sum(sum(c.values()) for c in groups.values())
    summary = f"{n} checkpoints and {sum(evaluated.values())} evaluated nets; the config's device: `{want}`."
    return Check("device and precision", not problems, summary, lines)


def _ddp_check(config: dict, metas: dict[str, dict]) -> Check:
    lines, problems, exercised = [], [], 0
    for s in plan.settings(config):
        path = layout.pretrained_path(s)
        if path not in metas:
            continue
        meta = metas[path].get("meta") or {}
        world = int(meta.get("world_size") or 1)
        asked = int(conf.resources(config, s.dataset, "pretrain", "gpu", conf.job_gpus(config)) or 0)
        digests = meta.get("rank_digests")
        if asked > 1 and world != asked:
            problems.append(f"{path}: the job asked for {asked} GPUs but trained in {world} process(es)")
        if world <= 1:
            continue
        exercised += 1
        if not isinstance(digests, list) or len(digests) != world:
            problems.append(f"{path}: world_size {world} but {len(digests) if isinstance(digests, list) else 'no'} "
                            "rank digests recorded")
        elif len(set(digests)) != 1:
            problems.append(f"{path}: the {world} ranks ended with different weights (digests "
                            f"{', '.join(str(d)[:12] for d in digests)})")
        else:
            lines.append(f"- {path}: {world} ranks agreed (digest {str(digests[0])[:12]})")
    lines += _not_ok(problems)
    if exercised:
        summary = f"{exercised} pretrained net(s) trained with DDP."
    else:
        summary = "DDP not exercised: no pretrained net has world_size > 1 (no dataset's pretraining has gpu > 1)."
    return Check("DDP ranks agreed", not problems, summary, lines)


def _outputs_check(config: dict, root: Path) -> Check:
    lines = ["| rule | files | missing |", "|---|---:|---:|"]
    missing_all = []
    for rule, files in expected_outputs(config).items():
        missing = [p for p in files if not (root / p).exists()]
        missing_all += [(rule, p) for p in missing]
        lines.append(f"| {rule} | {len(files) if files else '- (not in this config)'} | {len(missing)} |")
    lines += _not_ok([f"{rule} did not produce {p}" for rule, p in missing_all])
    ran = [r for r, f in expected_outputs(config).items() if f]
    summary = (f"every rule of the DAG ({len(ran)} rules) produced its outputs." if not missing_all
               else f"{len(missing_all)} output(s) missing.")
    return Check("every rule produced its outputs", not missing_all, summary, lines)


def _throughput_sums(config: dict, root: Path, metas: dict[str, dict], problems: list) -> dict:
    """Per (dataset, arch): reference units processed by the pretraining jobs and their loop and job seconds."""
    pairs: dict[tuple[str, str], dict] = {}
    for s in plan.settings(config):
        acc = pairs.setdefault((s.dataset, s.arch), {"units": 0.0, "loop": 0.0, "job": 0.0, "loop_s": 0.0,
                                                     "job_s": 0.0, "gpus": set(), "precision": set(),
                                                     "complete": True, "loop_ok": True})
        params = conf.recipe_params(config, s.dataset)
        meta_all = metas.get(layout.pretrained_path(s))
        meta = (meta_all or {}).get("meta") or {}
        try:
            recipe = Recipe(**meta_all["recipe"]) if meta_all and meta_all.get("recipe") else \
                get_recipe(params["name"], **params["overrides"])
        except (TypeError, ValueError):
            recipe = get_recipe(params["name"], **params["overrides"])
        recipe = dataclasses.replace(recipe, include_clean=False)  # pretraining never adds clean samples
        width = float((meta_all or {}).get("width") or conf.width(config, s.dataset))
        gpus = int(meta.get("world_size") or max(1, conf.resources(config, s.dataset, "pretrain", "gpu",
                                                                     conf.job_gpus(config)) or 1))
        n_train = cost.SPLIT_SIZES.get(s.dataset, (recipe.train_subset or 0, 0))[0]
        images = min(recipe.train_subset or n_train, n_train) // recipe.batch_size * recipe.batch_size
        # seconds on one GPU at width 1 in the cost model's reference precision, per unit processed
        scale = gpus / (width ** 2) * cost._speed(recipe)
        bench = root / pretrain_benchmark(s)
        try:
            job = read_benchmark_seconds(bench)
        except (OSError, ValueError) as e:
            problems.append(f"{pretrain_benchmark(s)}: {_one_line(e) if bench.exists() else 'missing'}")
            acc["complete"] = False
            continue
        history = meta.get("history") or []
        loop = sum(float(h.get("seconds") or 0) for h in history if isinstance(h, dict))
        if not loop:
            acc["loop_ok"] = False
        acc["units"] += recipe.epochs * images * cost.train_units(recipe, s.pretraining)
        acc["loop"] += loop * scale
        acc["job"] += job * scale
        acc["loop_s"] += loop
        acc["job_s"] += job
        acc["gpus"].add(gpus)
        acc["precision"].add(str(meta.get("precision") or "?"))
    return pairs


def _throughput_check(config: dict, root: Path, metas: dict[str, dict]) -> tuple[Check, dict]:
    problems: list = []
    pairs = _throughput_sums(config, root, metas, problems)
    throughput: dict[str, dict[str, float]] = {}
    lines = ["| dataset | arch | GPUs | precision | units | training loop s | job s | images/s (loop) | "
             "images/s (job) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for (dataset, arch), acc in sorted(pairs.items(), key=lambda kv: (list(config["datasets"]).index(kv[0][0]),
                                                                        kv[0][1])):
        if not acc["complete"] or not acc["units"] or not acc["job"]:
            problems.append(f"{dataset}/{arch}: no throughput measured")
            continue
        job_rate = acc["units"] / acc["job"]
        loop_rate = acc["units"] / acc["loop"] if acc["loop_ok"] and acc["loop"] else None
        rate = loop_rate if loop_rate is not None else job_rate
        throughput.setdefault(dataset, {})[arch] = float(f"{rate:.4g}")
        loop_s = "-" if loop_rate is None else f"{acc['loop_s']:.1f}"
        loop_r = "-" if loop_rate is None else f"{loop_rate:.4g}"
        gpus = "/".join(map(str, sorted(acc["gpus"])))
        lines.append(f"| {dataset} | {arch} | {gpus} | {'/'.join(sorted(acc['precision']))} | {acc['units']:.0f} | "
                     f"{loop_s} | {acc['job_s']:.1f} | {loop_r} | {job_rate:.4g} |")
    lines += ["", "units: clean-training image steps of the pretraining jobs (an adversarial image counts k + 1); "
              "seconds: the training loops (epoch timings in the checkpoints) and the whole jobs (Snakemake "
              "benchmarks), summed over the jobs. images/s: units per second per GPU, at width 1, in the cost "
              "model's reference precision (what `advlayers cost --throughput` reads). throughput.yaml takes the "
              "training-loop rate (the job's where a checkpoint has no epoch timings). At toy size both are lower "
              "bounds (one or two steps, warm-up included); `advlayers cost --measure` times steady-state steps."]
    lines += _not_ok(problems)
    n = sum(len(a) for a in throughput.values())
    summary = f"{n} (dataset, arch) pair(s) measured; written to results/throughput.yaml."
    return Check("training throughput", not problems and bool(throughput), summary, lines), throughput


# --------------------------------------------------------------------------- the checklist


def checklist(config: dict, root=".") -> tuple[str, dict[str, dict[str, float]], bool]:
    """(markdown, throughput {dataset: {arch: images_per_s}}, ok) of the run under `root` for `config`."""
    root = Path(root)
    metas: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for _, _, path in checkpoint_files(config):
        if (root / path).is_file():
            try:
                metas[path] = read_checkpoint_meta(root / path)
            except Exception as e:  # noqa: BLE001 (a corrupt file of any kind is a finding, not a crash)
                errors[path] = _one_line(e)
    checks = [_device_check(config, root, metas, errors), _ddp_check(config, metas), _outputs_check(config, root)]
    throughput_check, throughput = _throughput_check(config, root, metas)
    checks.append(throughput_check)
    ok = all(c.ok for c in checks)
    letters = "abcd"
    head = [f"# Preflight checklist: {OK if ok else NOT_OK}", "",
            f"Datasets {', '.join(config['datasets'])}; device `{config.get('device', 'cpu')}`; "
            f"{len(plan.settings(config))} pretrained nets, {sum(len(c) for c in plan.cells(config).values())} "
            f"retrained cells, {len(plan.gpu_jobs(config))} training and evaluation jobs.", "",
            "| check | status |", "|---|---|"]
    head += [f"| ({letter}) {c.title} | {OK if c.ok else NOT_OK} |" for letter, c in zip(letters, checks)]
    body = [c.markdown(letter) for letter, c in zip(letters, checks)]
    return "\n".join(head + [""] + body), throughput, ok


def throughput_yaml(throughput: dict) -> str:
    """throughput.yaml's text: a comment saying what the numbers are, then {dataset: {arch: images_per_s}}."""
    import yaml

    return ("# Clean-training images/s per GPU (width 1, the cost model's fp32 reference units) measured by the\n"
            "# preflight's pretraining jobs (results/preflight.md, (d)); a lower bound at toy size.\n"
            "#   advlayers cost --configfile config/paper.yaml --throughput results/throughput.yaml\n"
            + yaml.safe_dump(throughput, sort_keys=False))
