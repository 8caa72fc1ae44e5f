"""Evaluations split into shards of test images (config `datasets.<d>.autoattack.shards`): which jobs a unit is
split into, the slice of the images each evaluates, and the files the merge reads (standard library only; the
shards' ids are `layout.shard_unit`'s)."""

from __future__ import annotations

import re

from . import conf, layout
from .vocabulary import ConfigError, Setting


def count(config: dict, dataset: str, unit: str) -> int:
    """Jobs an evaluation unit of `dataset` is split into (`datasets.<d>.autoattack.shards`; PGD units: 1)."""
    if layout.whole_unit(unit) != layout.AUTOATTACK_UNIT:
        return 1
    return int(conf.with_defaults(conf.autoattack_config(config, dataset), "datasets", "*", "autoattack")["shards"])


def shard_units(config: dict, dataset: str, unit: str) -> list[str]:
    """The units of the jobs that evaluate `unit`: itself, or its shards' (`layout.shard_unit`)."""
    k = count(config, dataset, unit)
    return [unit] if k == 1 else [layout.shard_unit(unit, i, k) for i in range(k)]


def shard_files(config: dict, setting: Setting, unit: str) -> list[str]:
    """The records files of a sharded unit's shards (the merge's inputs; their outcomes lie beside them)."""
    units = shard_units(config, setting.dataset, unit)
    if units == [unit]:
        raise ConfigError(f"evaluation {unit} of {setting} is not sharded in this config")
    return [layout.evaluation_paths(setting, u)[0] for u in units]


def sharded_datasets_pattern(config: dict) -> str:
    """Wildcard constraint of the datasets whose AutoAttack jobs are sharded (the merge rule's); matches none
    when no dataset is."""
    sharded = [d for d in config["datasets"] if conf.autoattack_config(config, d) is not None
               and count(config, d, layout.AUTOATTACK_UNIT) > 1]
    return "|".join(re.escape(d) for d in sharded) or "(?!)"


def shard_bounds(n: int, batch_size: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) positions (in the seeded subset of `n` test images) of shard `index` of `count`: whole
    batches (so that every batch, and the attack's per-batch random stream, is the unsharded run's), as even as
    that allows; more shards than batches is a ConfigError."""
    if not 0 <= index < count:
        raise ValueError(f"no shard {index} of {count}")
    batches = -(-n // batch_size)
    if count > batches:
        raise ConfigError(f"config error: {count} shards of {n} test images in batches of {batch_size} "
                          f"({batches} batches): choose shards <= {batches}")
    per, extra = divmod(batches, count)
    first = index * per + min(index, extra)
    last = first + per + (1 if index < extra else 0)
    return min(n, first * batch_size), min(n, last * batch_size)
