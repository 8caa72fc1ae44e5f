import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from advlayers.core.datasets import load_dataset, load_prepared, prepare_dataset
from advlayers.core.splits import AugmentSpec, FolderSplit, TensorSplit, default_workers, epoch_batches, num_batches
from advlayers.grid.vocabulary import DATASETS

WNIDS = ["n01440764", "n02102040", "n03000684"]


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def _split(n=10, c=3, h=6, w=5, spec=AugmentSpec(), seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g),
                       torch.arange(n), spec)


# ---------------------------------------------------------------------------------------------- embedded sets

def test_mnist5k(mnist):
    assert mnist.train.x.shape == (4000, 3, 32, 32) and mnist.test.x.shape == (1000, 3, 32, 32)
    assert mnist.train.x.dtype == torch.uint8 and mnist.train.y.dtype == torch.int64
    assert mnist.info.num_classes == 10 and mnist.info.in_memory and mnist.info.image_size == 32
    assert mnist.info.augment == AugmentSpec(crop_padding=2, flip=False)
    # stratified: every class, in proportion
    assert torch.bincount(mnist.train.y).tolist() == [400] * 10
    assert torch.bincount(mnist.test.y).tolist() == [100] * 10
    x = mnist.train.x
    assert x[:, :, :2].eq(0).all() and x[:, :, -2:].eq(0).all()
    assert x[:, :, :, :2].eq(0).all() and x[:, :, :, -2:].eq(0).all()
    assert x[:, :, 2:-2, 2:-2].max() == 255  # real digits inside the border
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    again = load_dataset("mnist5k")
    assert torch.equal(again.train.x, x) and torch.equal(again.test.y, mnist.test.y)


def test_digits():
    ds = load_dataset("digits")
    assert ds.train.x.shape == (1437, 3, 32, 32) and ds.test.x.shape == (360, 3, 32, 32)
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.min() == 0 and ds.train.x.max() == 255
    assert set(ds.test.y.tolist()) == set(range(10))
    assert ds.info.augment.flip is False
    again = load_dataset("digits")
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)


def test_subset(mnist):
    small = mnist.train.subset(100, seed=1)
    assert len(small) == 100 and torch.equal(small.x, mnist.train.subset(100, seed=1).x)
    assert not torch.equal(small.y, mnist.train.subset(100, seed=2).y)
    assert mnist.train.subset(None) is mnist.train and mnist.train.subset(10**6) is mnist.train
    # a subset knows its samples' positions in the full split (per-sample outcomes are keyed by them)
    assert torch.equal(mnist.train.index, torch.arange(4000))
    assert small.index.tolist() == sorted(set(small.index.tolist())) and small.index.max() < 4000
    assert torch.equal(small.x, mnist.train.x[small.index]) and torch.equal(small.y, mnist.train.y[small.index])
    smaller = small.subset(10, seed=0)  # positions stay those of the full split
    assert torch.equal(smaller.x, mnist.train.x[smaller.index]) and set(smaller.index.tolist()) <= set(small.index.tolist())
    assert torch.equal(small.to("cpu").index, small.index)


# ---------------------------------------------------------------------------------------------- batches

def test_batches_plain_equal_x_over_255():
    split = _split(spec=AugmentSpec())
    (x, y), (x2, y2) = split.batches(6)  # second batch is the 4 left over
    assert x.dtype == torch.float32 and torch.equal(x, split.x[:6].float() / 255)
    assert torch.equal(torch.cat([y, y2]), split.y) and x2.shape == (4, 3, 6, 5)
    # augment=True with a no-op spec is also the identity
    assert torch.equal(next(split.batches(10, augment=True))[0], split.x.float() / 255)


def test_flip_only_flips_the_chosen_samples():
    split = _split(n=64, spec=AugmentSpec(flip=True))
    out = torch.cat([x for x, _ in split.batches(16, augment=True, generator=torch.Generator().manual_seed(3))])
    ref_gen = torch.Generator().manual_seed(3)
    chosen = torch.cat([torch.rand(16, generator=ref_gen) < 0.5 for _ in range(4)])
    assert 0 < chosen.sum() < 64
    for i in range(64):
        img = split.x[i].flip(-1) if chosen[i] else split.x[i]
        assert torch.equal(out[i], img.float() / 255), i


def test_crop_matches_per_image_reference():
    p = 2
    split = _split(n=8, spec=AugmentSpec(crop_padding=p, flip=True))
    out = next(split.batches(8, augment=True, generator=torch.Generator().manual_seed(5)))[0]
    assert out.shape == (8, 3, 6, 5) and out.min() >= 0 and out.max() <= 1
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 2 * p + 1, (8, 2), generator=g)
    flips = torch.rand(8, generator=g) < 0.5
    padded = torch.nn.functional.pad(split.x, (p, p, p, p))
    for i, ((r, c), flip) in enumerate(zip(offsets.tolist(), flips)):
        img = padded[i, :, r:r + 6, c:c + 5]
        assert torch.equal(out[i], (img.flip(-1) if flip else img).float() / 255), i
    assert (offsets != p).any()  # some sample really moved


def test_same_seed_same_batches_and_shuffle_is_a_permutation(mnist):
    split = mnist.train.subset(300)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return list(split.batches(64, shuffle=True, augment=True, generator=g))

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    assert 0 <= a[0][0].min() and a[0][0].max() <= 1 and a[0][0].shape == (64, 3, 32, 32)
    # every sample exactly once per epoch: identify samples by their label sequence under an index split
    idx_split = _split(n=103)
    seen = torch.cat([y for _, y in idx_split.batches(10, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(103)) and seen.tolist() != list(range(103))


def test_num_batches_drops_the_last_incomplete_batch():
    assert num_batches(_split(n=103), 10) == 10 and num_batches(_split(n=100), 10) == 10
    assert num_batches(_split(n=9), 10) == 0


@pytest.mark.parametrize("spec", [AugmentSpec(), AugmentSpec(crop_padding=2, flip=True)])
def test_epoch_batches_are_the_shuffled_augmented_batches(spec):
    """One process: exactly `batches(shuffle=True, augment=True, drop_last=True)` from the same generator."""
    split = _split(n=53, spec=spec)
    reference = list(split.batches(8, shuffle=True, augment=True, drop_last=True,
                                   generator=torch.Generator().manual_seed(4)))
    got = list(epoch_batches(split, 8, torch.Generator().manual_seed(4)))
    assert [i for i, _, _ in got] == list(range(6)) == list(range(num_batches(split, 8)))
    for (_, x, y), (rx, ry) in zip(got, reference, strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry) and x.dtype == torch.float32


def test_epoch_batches_split_across_ranks_and_resume_mid_epoch():
    split = _split(n=40, spec=AugmentSpec(crop_padding=1, flip=True))
    whole = list(epoch_batches(split, 8, torch.Generator().manual_seed(1)))
    # four ranks: disjoint equal slices whose union (in rank order) is the single-process batch
    ranks = [list(epoch_batches(split, 8, torch.Generator().manual_seed(1), rank=r, world_size=4)) for r in range(4)]
    for i, (_, x, y) in enumerate(whole):
        assert all(len(ranks[r][i][2]) == 2 for r in range(4))
        assert torch.equal(torch.cat([ranks[r][i][1] for r in range(4)]), x)
        assert torch.equal(torch.cat([ranks[r][i][2] for r in range(4)]), y)
    # resuming at batch 3 with the generator state saved after batch 2 gives the rest of the epoch
    g = torch.Generator().manual_seed(1)
    it = epoch_batches(split, 8, g)
    for _ in range(3):
        next(it)
    saved = g.get_state()
    rest = list(epoch_batches(split, 8, torch.Generator().manual_seed(1), start=3, generator_state=saved))
    assert [i for i, _, _ in rest] == [3, 4]
    for (i, x, y), (j, wx, wy) in zip(rest, whole[3:], strict=True):
        assert i == j and torch.equal(x, wx) and torch.equal(y, wy)
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        next(epoch_batches(split, 8, torch.Generator(), world_size=3))


def test_drop_last():
    split = _split(n=103)
    sizes = [len(y) for _, y in split.batches(10, drop_last=True)]
    assert sizes == [10] * 10
    assert [len(y) for _, y in split.batches(10)][-1] == 3


# ---------------------------------------------------------------------------------------------- cifar10

def _write_cifar(root, per_batch=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f, protocol=2)
        written[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, f, protocol=2)
    return names, written


def test_cifar10_real_format(tmp_path):
    names, written = _write_cifar(tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.info.classes == names and ds.info.augment == AugmentSpec(crop_padding=4, flip=True)
    assert ds.train.x.shape == (100, 3, 32, 32) and ds.test.x.shape == (20, 3, 32, 32)
    data, labels = written["data_batch_2"]
    # row layout: 1024 red (row-major 32x32), then 1024 green, then 1024 blue
    i, r, c = 7, 5, 9
    assert ds.train.x[20 + i, 0, r, c] == data[i, r * 32 + c]
    assert ds.train.x[20 + i, 1, r, c] == data[i, 1024 + r * 32 + c]
    assert ds.train.x[20 + i, 2, r, c] == data[i, 2048 + r * 32 + c]
    assert torch.equal(ds.train.x[20:40].reshape(20, -1), torch.from_numpy(data))
    assert ds.train.y[20:40].tolist() == labels
    assert torch.equal(ds.test.x.reshape(20, -1), torch.from_numpy(written["test_batch"][0]))
    # root may also be the batches folder itself
    assert torch.equal(load_dataset("cifar10", tmp_path / "cifar-10-batches-py").test.y, ds.test.y)


class _Exploit:
    """A crafted pickle: unpickling it calls `pathlib.Path.touch` on a marker (a stand-in for os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batch_of_any_protocol_is_read(tmp_path, protocol):
    """The restricted unpickler admits a real-format batch however it was pickled (Python 3, numpy 2)."""
    names, written = _write_cifar(tmp_path)
    data, labels = written["data_batch_1"]
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"batch_label": b"training batch 1 of 5", b"data": data, b"labels": labels,
                     b"filenames": [b"a.png"] * len(labels)}, f, protocol=protocol)
    ds = load_dataset("cifar10", tmp_path)
    assert torch.equal(ds.train.x[:20].reshape(20, -1), torch.from_numpy(data)) and ds.info.classes == names


@pytest.mark.parametrize("name", ["data_batch_4", "batches.meta"])
def test_cifar10_crafted_pickle_does_not_execute(tmp_path, name):
    """Issue 20 E: a crafted batch is refused with one line naming the file, and its payload never runs."""
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / name, "wb") as f:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match=f"{name} is not a CIFAR-10 python batch \\(it references ") as e:
        load_dataset("cifar10", tmp_path)
    assert "\n" not in str(e.value) and not marker.exists()


def test_cifar10_object_array_refused(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.array([1, "x"], dtype=object), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_missing_batch(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------------------------------------- folders

def _write_images(folder, classes, n, ext="JPEG", size=(40, 30)):
    rng = np.random.default_rng(len(str(folder)))
    for cls in classes:
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{cls}_{i}.{ext}")


@pytest.fixture(scope="module")
def imagenette_tgz(tmp_path_factory):
    base = tmp_path_factory.mktemp("nette_src")
    tree = base / "imagenette2-160"
    _write_images(tree / "train", WNIDS, 4)
    _write_images(tree / "val", WNIDS, 2)
    archive_dir = tmp_path_factory.mktemp("nette")
    archive = archive_dir / "imagenette2-160.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="imagenette2-160")
    return archive


def _check_imagenette(ds, image_size=64):
    assert ds.info.classes == WNIDS and ds.info.num_classes == 3 and not ds.info.in_memory
    assert len(ds.train) == 12 and len(ds.test) == 6
    assert isinstance(ds.train, FolderSplit)
    ds.train.num_workers = ds.test.num_workers = 0
    x, y = next(ds.train.batches(5, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (5, 3, image_size, image_size) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    ys = torch.cat([y for _, y in ds.test.batches(4)])
    assert ys.tolist() == [0, 0, 1, 1, 2, 2]


def test_imagenette_from_archive_dir_and_parent(imagenette_tgz):
    ds = load_dataset("imagenette", imagenette_tgz, image_size=64)
    extracted = imagenette_tgz.parent / "imagenette2-160"
    assert (extracted / "train" / WNIDS[0]).is_dir()
    assert not [p for p in os.listdir(imagenette_tgz.parent) if p.startswith(".")]  # no temp leftovers
    _check_imagenette(ds)
    mtime = extracted.stat().st_mtime_ns
    _check_imagenette(load_dataset("imagenette", imagenette_tgz, image_size=64))  # re-used, not re-extracted
    assert extracted.stat().st_mtime_ns == mtime
    _check_imagenette(load_dataset("imagenette", extracted, image_size=64))
    _check_imagenette(load_dataset("imagenette", imagenette_tgz.parent, image_size=64))


def test_imagenette_archive_in_parent_is_extracted(imagenette_tgz, tmp_path):
    archive = tmp_path / imagenette_tgz.name
    archive.write_bytes(imagenette_tgz.read_bytes())
    ds = load_dataset("imagenette", tmp_path, image_size=64)
    assert (tmp_path / "imagenette2-160" / "val").is_dir() and len(ds.test) == 6


def test_folder_batches_reproducible_and_worker_independent(imagenette_tgz):
    split = load_dataset("imagenette", imagenette_tgz, image_size=32).train
    split.num_workers = 0

    def epoch(seed):
        return list(split.batches(4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(seed)))

    a = epoch(0)
    split.num_workers = 1
    b = epoch(0)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(y for _, y in split.samples)
    assert [len(y) for _, y in split.batches(5, drop_last=True)] == [5, 5]
    small = split.subset(5, seed=0)
    assert isinstance(small, FolderSplit) and len(small) == 5 and small.samples == split.subset(5, seed=0).samples
    assert split.to("cpu") is split


def test_folder_evaluation_leaves_the_global_rng_alone(imagenette_tgz):
    """Unshuffled, unaugmented batches (evaluation's) draw nothing from torch's global RNG: the held-out evaluation
    after each epoch (config eval_each_epoch) must not move the stream dropout draws from."""
    from advlayers.core.attacks import AttackSpec
    from advlayers.core.evaluation import evaluate
    from helpers import small_net

    split = load_dataset("imagenette", imagenette_tgz, image_size=32).test
    split.num_workers = 0
    torch.manual_seed(5)
    before = torch.get_rng_state()
    for workers in (0, 1):
        split.num_workers = workers
        assert len(list(split.batches(4, shuffle=False, augment=False))) == 2
        assert torch.equal(torch.get_rng_state(), before)
    evaluate(small_net(), split, AttackSpec(0.1, 0.04, 2), n=4, batch_size=2, progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_default_workers_share_the_allocated_cpus_between_local_ranks(monkeypatch):
    """Workers follow the CPUs the job may use (a SLURM allocation, not the node's count), divided among the
    node's DDP ranks: 8 ranks with 8 workers each on 8 allocated CPUs would run 64 decoders on 8 cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 256)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 16 and default_workers(limit=100) == 64
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers() == 8 and FolderSplit([], []).num_workers == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert default_workers() == 1


def test_folder_epoch_batches_split_across_ranks(imagenette_tgz):
    split = load_dataset("imagenette", imagenette_tgz, image_size=32).train
    split.num_workers = 0
    whole = list(epoch_batches(split, 4, torch.Generator().manual_seed(2)))
    assert [i for i, _, _ in whole] == [0, 1, 2] and all(x.shape == (4, 3, 32, 32) for _, x, _ in whole)
    again = list(epoch_batches(split, 4, torch.Generator().manual_seed(2)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(whole, again))
    ranks = [list(epoch_batches(split, 4, torch.Generator().manual_seed(2), rank=r, world_size=2)) for r in (0, 1)]
    for i, (_, x, y) in enumerate(whole):
        assert torch.equal(torch.cat([ranks[0][i][1], ranks[1][i][1]]), x)
        assert torch.equal(torch.cat([ranks[0][i][2], ranks[1][i][2]]), y)


def test_imagenet_folder(tmp_path):
    _write_images(tmp_path / "train", ["cat", "dog"], 3, ext="png", size=(20, 50))
    _write_images(tmp_path / "val", ["cat", "dog"], 2, ext="jpg")
    ds = load_dataset("imagenet", tmp_path, image_size=32)
    assert ds.info.classes == ["cat", "dog"] and ds.info.image_size == 32
    assert (len(ds.train), len(ds.test)) == (6, 4)
    ds.test.num_workers = 0
    x, y = next(ds.test.batches(4))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    assert load_dataset("imagenet", tmp_path).info.image_size == 224


# ---------------------------------------------------------------------------------------------- prepared

def test_prepare_round_trip_mnist5k(mnist, tmp_path):
    out = tmp_path / "sub" / "mnist5k.pt"
    summary = prepare_dataset("mnist5k", None, out)
    assert summary == {"name": "mnist5k", "n_train": 4000, "n_test": 1000, "num_classes": 10, "image_size": 32,
                       "classes": [str(i) for i in range(10)]}
    assert os.listdir(out.parent) == ["mnist5k.pt"]
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == "advlayers-dataset-v1" and raw["augment"] == {"crop_padding": 2, "flip": False}
    ds = load_prepared(out)
    assert ds.info == mnist.info
    for a, b in [(ds.train.x, mnist.train.x), (ds.train.y, mnist.train.y), (ds.test.x, mnist.test.x),
                 (ds.test.y, mnist.test.y)]:
        assert torch.equal(a, b)
    assert ds.train.augment == mnist.train.augment


def test_prepare_failure_keeps_old_artifact(tmp_path, monkeypatch):
    out = tmp_path / "digits.pt"
    prepare_dataset("digits", None, out)
    before = out.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset("digits", None, out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["digits.pt"]


def test_prepare_round_trip_imagenette(imagenette_tgz, tmp_path):
    out = tmp_path / "imagenette.json"
    summary = prepare_dataset("imagenette", imagenette_tgz, out)
    assert summary["n_train"] == 12 and summary["n_test"] == 6 and summary["classes"] == WNIDS
    manifest = json.loads(out.read_text())
    assert manifest["format"] == "advlayers-dataset-v1" and manifest["image_size"] == 224
    assert manifest["root"] == str(imagenette_tgz.parent / "imagenette2-160") and os.path.isabs(manifest["root"])
    ds = load_prepared(out)
    assert ds.info.classes == WNIDS and len(ds.train) == 12 and ds.info.image_size == 224
    assert ds.train.samples == load_dataset("imagenette", imagenette_tgz).train.samples
    # a changed folder is detected
    extra = imagenette_tgz.parent / "imagenette2-160" / "train" / WNIDS[0] / "extra.JPEG"
    Image.new("RGB", (8, 8)).save(extra)
    try:
        with pytest.raises(ValueError, match="changed"):
            load_prepared(out)
    finally:
        extra.unlink()


# ---------------------------------------------------------------------------------------------- bad input

def test_unknown_name():
    with pytest.raises(ValueError, match="valid choices: " + ", ".join(DATASETS)):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="imagenette"):
        prepare_dataset("svhn", None, "unused.pt")


@pytest.mark.parametrize("name", ["cifar10", "imagenette", "imagenet"])
def test_missing_root(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*expected"):
        load_dataset(name, missing)
    with pytest.raises(FileNotFoundError, match="needs root"):
        load_dataset(name)
    assert not missing.exists()


def test_folder_without_val(tmp_path):
    _write_images(tmp_path / "train", ["a", "b"], 1)
    with pytest.raises(FileNotFoundError, match=f"missing folder {tmp_path / 'val'}"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing folder .*val"):
        load_dataset("imagenette", tmp_path)


def test_empty_imagenette_parent(tmp_path):
    with pytest.raises(FileNotFoundError, match="no imagenette2"):
        load_dataset("imagenette", tmp_path)


def test_in_memory_image_size():
    with pytest.raises(ValueError, match="32 px"):
        load_dataset("digits", image_size=64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu(mnist):
    split = mnist.train.subset(200)
    on_gpu = split.to("cuda")
    assert on_gpu.x.is_cuda
    cpu = list(split.batches(64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)))
    gpu = list(on_gpu.batches(64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0),
                              device="cuda"))
    assert all(xg.is_cuda and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
               for (xc, yc), (xg, yg) in zip(cpu, gpu))


def test_imagenette_is_the_224_px_protocol():
    """Paper §4.2: Imagenette at 224 px. The default download is imagenette2-320 (not the 160 px version
    upsampled), resized and cropped to 224 for training and evaluation."""
    from advlayers.core import datasets

    assert datasets.IMAGENETTE_URL.endswith("imagenette2-320.tgz") and datasets.FOLDER_IMAGE_SIZE == 224
    split = datasets.FolderSplit([], ["a", "b"])
    train, test = split.transform(True), split.transform(False)
    assert [type(t).__name__ for t in train.transforms][:1] == ["RandomResizedCrop"] and train.transforms[0].size == (224, 224)
    assert [type(t).__name__ for t in test.transforms][:2] == ["Resize", "CenterCrop"]
    assert test.transforms[1].size == (224, 224)
