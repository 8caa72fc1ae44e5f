"""The evaluation job (rules `evaluate`, `evaluate_autoattack`): evaluate saved nets on the same test images.

Reads self-describing checkpoints, checks that each is the net it was asked for (and was trained on this
data), and writes the records (accuracies with Wilson intervals, the attack's settings, provenance) and the
per-sample outcomes that let any two nets be compared image by image.
"""

from __future__ import annotations

import logging

from ..core.checkpoints import load_checkpoint
from ..core.datasets import load_prepared
from ..core.evaluation import attack_from_settings, evaluate
from ..core.recipes import recipe_digest
from ..core.splits import image_part
from ..grid import conf, layout, sharding
from ..grid.vocabulary import Setting
from ..io import file_digests, sha256_file, write_json, write_parquet
from ..provenance import config_digest, environment

log = logging.getLogger(__name__)


def eval_images(data, eval_settings: dict, n: int | None = None, what: str = "eval.n"):
    """The part of `data`'s test split that `eval_settings` draws from (`images`: tuning | confirmation,
    `core.splits.image_part`); `n` images (default the settings' n) must fit in it."""
    settings = conf.with_defaults(eval_settings, "datasets", "*", "eval")
    part = image_part(data.test, settings["images"], data.info.name)
    n = settings["n"] if n is None else n
    if n is not None and n > len(part):
        raise ValueError(f"{what} = {n} test images, but the {settings['images']} part of {data.info.name}'s test "
                         f"split has {len(part)}; choose n <= {len(part)} or null (the whole part)")
    return part


def evaluate_split(model, data, eval_settings: dict, *, device="cpu", labels: dict | None = None,
                   shard: tuple[int, int] | None = None) -> dict:
    """One net on the test images of `eval_settings` (`grid.conf.eval_settings`: attack, images, n, seed, batch
    size): the `core.evaluation.evaluate` record, with its `image_part` and per-sample "outcomes"; `shard` =
    (index, count) evaluates that shard's slice of the images only (`grid.sharding.shard_bounds`)."""
    settings = conf.with_defaults(eval_settings, "datasets", "*", "eval")
    part = eval_images(data, settings)
    labels = {**(labels or {}), "image_part": settings["images"]}
    bounds = None
    if shard is not None:
        n = len(part) if settings["n"] is None else min(settings["n"], len(part))
        bounds = sharding.shard_bounds(n, settings["batch_size"], *shard)
        labels.update(shard_index=shard[0], shards=shard[1])
    return evaluate(model, part, attack_from_settings(settings), n=settings["n"], seed=settings["seed"],
                    batch_size=settings["batch_size"], device=device, progress=False, outcomes=True,
                    labels=labels, shard=bounds, channels_last=settings["channels_last"])


def evaluate_checkpoints(checkpoints: dict, data, *, eval_settings: dict, setting: Setting, data_path, device="cpu",
                         digest_of_config: str = "", shard: tuple[int, int] | None = None
                         ) -> tuple[list[dict], list[dict]]:
    """Evaluate each {cell: checkpoint path}; every checkpoint must be `setting`'s net of that cell.

    Returns (records, outcome rows). Records carry the net's identity from the checkpoint (after checking it),
    the attack's settings, accuracies with Wilson intervals, and provenance (recipe, precision, code, device)."""
    records, outcomes = [], []
    data_digest = sha256_file(data_path)
    for cell, path in checkpoints.items():
        model, payload = load_checkpoint(path, device=device, expect={**setting.identity(), "cell": cell}, sources=True)
        meta = payload["meta"]
        if payload["inputs"].get("data", {}).get("sha256") not in (None, data_digest):
            raise ValueError(f"checkpoint {path} was trained on another version of {data_path} (its recorded sha256 "
                             "differs); rebuild it (`snakemake verify` lists the command)")
        record = evaluate_split(model, data, eval_settings, device=device, labels={
            "dataset": payload["dataset"], "arch": payload["arch"], "width": payload.get("width", 1.0),
            "seed": payload["seed"], "pretraining": meta["pretraining"], "retraining": meta["retraining"],
            "cell": cell, "retrained_modules": meta["retrained_modules"]}, shard=shard)
        per_sample = record.pop("outcomes")
        env = environment(device, precision=meta.get("precision"))
        record.update(epochs=meta.get("epochs", payload["epoch"]), recipe=payload["recipe"],
                      recipe_digest=recipe_digest(payload["recipe"]), checkpoint=str(path),
                      checkpoint_digest=payload["digest"],
                      provenance={**payload.get("provenance", {}), **{k: v for k, v in env.items() if k in
                                  ("created", "host")}, "precision": meta.get("precision", ""),
                                  "config_digest": digest_of_config, "eval_device_name": env["device_name"]})
        records.append(record)
        for index, clean, robust in zip(*per_sample.values()):
            outcomes.append({"dataset": record["dataset"], "arch": record["arch"], "seed": record["seed"],
                             "pretraining": record["pretraining"], "cell": cell, "attack": record["attack"],
                             "image_part": record["image_part"], "test_index": int(index),
                             "clean_correct": bool(clean), "robust_correct": bool(robust)})
        log.info("%s: clean %.4f robust %.4f (%d images, %.1fs)", cell, record["clean_acc"], record["robust_acc"],
                 record["n_eval"], record["seconds"])
    return records, outcomes


def run(*, data: str, checkpoints: dict, eval_settings: dict, setting: Setting, device: str, config: dict,
        records_out: str, outcomes_out: str, unit: str = "") -> None:
    """The job: evaluate `checkpoints` ({cell: path}) and write the records and the per-sample outcomes; a
    shard's unit (`layout.unit_shard`) evaluates its slice of the images."""
    found = layout.unit_shard(unit)
    records, outcomes = evaluate_checkpoints(checkpoints, load_prepared(data), eval_settings=eval_settings,
                                             setting=setting, data_path=data, device=device,
                                             digest_of_config=config_digest(config),
                                             shard=None if found is None else found[1:])
    write_parquet(outcomes_out, outcomes)
    write_json(records_out, {"records": records, "eval_settings": eval_settings,
                             "inputs": file_digests({"data": data, **checkpoints})})
    log.info("wrote %d records to %s", len(records), records_out)
