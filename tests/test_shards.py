"""Evaluations split into shards of test images (`datasets.<d>.autoattack.shards`): each shard evaluates a
disjoint slice of the same seeded images with the attack's per-batch random stream, so the merged shards are the
unsharded evaluation exactly; the merge refuses missing, duplicated or mismatched shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlayers.core.evaluation import batch_generator
from advlayers.grid import layout, sharding
from advlayers.grid.vocabulary import ConfigError, Setting
from advlayers.io import read_json, read_parquet, write_json, write_parquet
from advlayers.jobs import merge_shards
from advlayers.jobs.evaluate import evaluate_split

SETTINGS = {"attack": "pgd", "eps": 0.1, "step_size": 0.03, "steps": 3, "restarts": 1, "images": "confirmation",
            "n": 100, "seed": 3, "batch_size": 16}
NET = Setting("digits", "resnet18", 0, "conventional")
CELLS = ("pretrained", "m100000")


def test_shard_ids_and_bounds_tile_the_images():
    unit = layout.shard_unit("autoattack", 1, 3)
    assert unit == "autoattack-s1of3" and layout.unit_shard(unit) == ("autoattack", 1, 3)
    assert layout.whole_unit(unit) == "autoattack" and layout.unit_shard("autoattack") is None
    rel = layout.evaluation_paths(NET, unit)[0]
    assert layout.parse(rel) == ("evaluation", {**NET.identity(), "unit": unit})
    for n, batch, k in [(100, 16, 3), (1000, 256, 2), (1000, 256, 4), (17, 16, 2)]:
        bounds = [sharding.shard_bounds(n, batch, i, k) for i in range(k)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, disjoint
        assert all(start % batch == 0 and stop > start for start, stop in bounds)  # whole batches, none empty
    with pytest.raises(ConfigError, match="choose shards <= 4"):
        sharding.shard_bounds(1000, 256, 0, 5)
    # each batch's attack stream depends on (seed, position) only: the same in any shard, different between batches
    draw = lambda seed, position: torch.rand(8, generator=batch_generator(seed, position))  # noqa: E731
    assert torch.equal(draw(3, 48), draw(3, 48)) and not torch.equal(draw(3, 0), draw(3, 48))
    assert not torch.equal(draw(3, 0), draw(4, 0))


@pytest.fixture(scope="module")
def evaluated(trained_digits_model, digits):
    """The unsharded record and the records of 3 shards (PGD with random start: the stream matters)."""
    whole = evaluate_split(trained_digits_model, digits, SETTINGS)
    shards = [evaluate_split(trained_digits_model, digits, SETTINGS, shard=(i, 3)) for i in range(3)]
    return whole, shards


def test_sharded_and_unsharded_evaluations_give_identical_outcomes(evaluated):
    whole, shards = evaluated
    assert 0 < whole["robust_acc"] < whole["clean_acc"]  # the attack does something, and not everything
    for key in ("test_index", "clean_correct", "robust_correct"):
        merged = np.concatenate([s["outcomes"][key] for s in shards])
        np.testing.assert_array_equal(merged, whole["outcomes"][key])
    assert [s["n_eval"] for s in shards] == [48, 32, 20] and [s["shard_index"] for s in shards] == [0, 1, 2]
    assert len(set(np.concatenate([s["outcomes"]["test_index"] for s in shards]))) == 100


def _write_shards(tmp_path, shards, unit="autoattack", count=None, digest=lambda i, cell: "ckpt-" + cell):
    """Shard files as the evaluation job writes them (records + outcomes of two cells), at their layout paths."""
    paths = []
    for i, rec in enumerate(shards):
        records, rows = [], []
        for cell in CELLS:
            r = {k: v for k, v in rec.items() if k != "outcomes"}
            r.update(**NET.identity(), cell=cell, checkpoint_digest=digest(i, cell))
            records.append(r)
            rows += [{**NET.identity(), "cell": cell, "attack": r["attack"], "image_part": r["image_part"],
                      "test_index": int(t), "clean_correct": bool(c), "robust_correct": bool(b)}
                     for t, c, b in zip(*rec["outcomes"].values())]
        rel = layout.evaluation_paths(NET, layout.shard_unit(unit, i, count or len(shards)))
        (tmp_path / rel[0]).parent.mkdir(parents=True, exist_ok=True)
        write_json(tmp_path / rel[0], {"records": records, "eval_settings": SETTINGS,
                                       "inputs": {"data": {"path": "d", "sha256": "x"}}})
        write_parquet(tmp_path / rel[1], rows)
        paths.append(rel[0])
    return paths


def test_merged_shards_are_the_unsharded_evaluation(evaluated, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    whole, shards = evaluated
    paths = _write_shards(tmp_path, shards)
    out = layout.evaluation_paths(NET, "autoattack")
    merge_shards.run(shards=paths[::-1], records_out=out[0], outcomes_out=out[1])  # any order
    merged = read_json(out[0])  # written with its self-digest
    assert [r["cell"] for r in merged["records"]] == list(CELLS)
    for r in merged["records"]:
        for key in ("n_eval", "clean_acc", "clean_acc_lo", "clean_acc_hi", "robust_acc", "robust_acc_lo",
                    "robust_acc_hi", "eval_seed"):
            assert r[key] == whole[key], key
        assert r["shards_merged"] == 3 and "shard_index" not in r and "shard_start" not in r
    rows = read_parquet(out[1])
    first = rows[rows["cell"] == "pretrained"]
    np.testing.assert_array_equal(first["test_index"].to_numpy(), whole["outcomes"]["test_index"])
    np.testing.assert_array_equal(first["robust_correct"].to_numpy(), whole["outcomes"]["robust_correct"])


def test_merge_refuses_missing_duplicate_and_mismatched_shards(evaluated, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, shards = evaluated
    paths = _write_shards(tmp_path, shards)
    with pytest.raises(merge_shards.ShardError, match=r"not complete and distinct: missing \[1\], duplicated \[\]"):
        merge_shards.merge([paths[0], paths[2]], "autoattack")
    with pytest.raises(merge_shards.ShardError, match=r"missing \[2\], duplicated \[0\]"):
        merge_shards.merge([paths[0], paths[0], paths[1]], "autoattack")
    with pytest.raises(merge_shards.ShardError, match="is not a shard of evaluation unit 'pretrained'"):
        merge_shards.merge(paths, "pretrained")
    other = _write_shards(tmp_path / "b", shards[:2], count=2)
    with pytest.raises(merge_shards.ShardError, match="from different splits"):
        merge_shards.merge([*paths, *other], "autoattack")
    # a shard of another checkpoint (a net retrained since): refused, not mixed in
    (tmp_path / "c").mkdir()
    stale = _write_shards(tmp_path / "c", shards, digest=lambda i, cell: f"ckpt-{cell}-{i == 2}")
    monkeypatch.chdir(tmp_path / "c")
    with pytest.raises(merge_shards.ShardError, match="differ in the net evaluated"):
        merge_shards.merge(stale, "autoattack")


def test_merge_refuses_shards_that_do_not_tile_the_images(evaluated, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, shards = evaluated
    swapped = [shards[1], shards[0], shards[2]]  # shard files whose slices are not theirs
    paths = _write_shards(tmp_path, swapped)
    with pytest.raises(merge_shards.ShardError, match="do not tile the test images"):
        merge_shards.merge(paths, "autoattack")
