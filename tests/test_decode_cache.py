"""The decoded-image cache of folder datasets (`advlayers.core.decode_cache`, config `datasets.<d>.decode: cache`)."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from advlayers._torchvision import torchvision
from advlayers.core import decode_cache
from advlayers.core.datasets import load_dataset, load_prepared, prepare_dataset, prepare_folder
from advlayers.core.splits import FolderSplit, epoch_batches
from advlayers.grid import layout
from advlayers.io import ArtifactError, read_json, write_json

SIZES = [(40, 30), (30, 50), (64, 48)]  # (width, height): landscape, portrait, larger


def _write(folder, classes=("cat", "dog"), n=3, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n):
            w, h = SIZES[i % len(SIZES)]
            coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)  # smooth: resampling differences show
            image.save(folder / c / f"{c}_{i}.JPEG", quality=90)


@pytest.fixture()
def prepared(tmp_path):
    """A `kind: folder` dataset at 32 px (cache shorter side round(32 * 256 / 224) = 37) prepared with the cache."""
    root = tmp_path / "shapes"
    _write(root / "train")
    _write(root / "val", n=2, seed=1)
    out = tmp_path / "results" / "data" / "shapes.json"
    prepare_folder("shapes", root, out, image_size=32, decode="cache")
    return root, out


def _loaded(out, workers=0):
    ds = load_prepared(out)
    ds.train.num_workers = ds.test.num_workers = workers
    return ds


def test_cache_build_records_its_source_and_matches_pil_decoding(prepared):
    root, out = prepared
    manifest = read_json(out)
    assert manifest["decode"] == "cache" and manifest["cache_size"] == 37 == decode_cache.default_size(32)
    folder = root.parent / "results" / "data" / "shapes.cache"
    assert decode_cache.cache_dir_of(out) == folder
    assert layout.path("data_cache", dataset="shapes") == "results/data/shapes.cache"
    for split, n in (("train", 6), ("val", 4)):
        header = read_json(folder / f"{split}.json")
        assert manifest["cache"][split] == header["self_sha256"]
        assert header["format"] == decode_cache.CACHE_FORMAT and header["n"] == n and header["size"] == 37
        assert header["source"]["root"] == str(root / split) and "git_commit" not in header
        assert read_json(folder / f"{split}.provenance.json")["pillow_version"]
        index = np.load(folder / f"{split}.index.npy", allow_pickle=False)
        data = np.fromfile(folder / f"{split}.u8", dtype=np.uint8)
        assert index.shape == (n, 5) and header["data_bytes"] == len(data) == int((index[:, 1] * index[:, 2] * 3).sum())
        samples = FolderSplit.from_folder(root / split).samples
        resize = torchvision.transforms.Resize(37)
        for (offset, h, w, label, _), (path, want_label) in zip(index, samples):
            expected = np.asarray(resize(torchvision.datasets.folder.pil_loader(path)))
            assert min(h, w) == 37 and label == want_label
            assert np.array_equal(data[offset:offset + h * w * 3].reshape(h, w, 3), expected)
    prepare_folder("shapes", root, out, image_size=32, decode="cache")  # an identical rebuild: the same digests
    assert read_json(out)["cache"] == manifest["cache"]


def test_rebuild_at_another_commit_keeps_the_manifest(prepared, monkeypatch):
    """The code that made a cache is recorded beside it, not in the digested header: a rebuild of the same images at
    another commit (or in a dirty checkout) gives the same header digests and so the same prepared-data manifest,
    whose sha256 every checkpoint trained on it records (jobs/evaluate.py refuses another)."""
    root, out = prepared
    before = read_json(out)
    monkeypatch.setattr("advlayers.provenance.git_state", lambda: ("f" * 40, True))
    prepare_folder("shapes", root, out, image_size=32, decode="cache")
    after = read_json(out)
    assert after["cache"] == before["cache"] and after["self_sha256"] == before["self_sha256"]
    made = read_json(out.parent / "shapes.cache" / "train.provenance.json")
    assert made["git_commit"] == "f" * 40 and made["git_dirty"] is True and made["advlayers_version"]


def test_eval_batches_equal_the_pil_path_and_train_batches_are_seeded(prepared):
    root, out = prepared
    ds = _loaded(out)
    assert isinstance(ds.train, decode_cache.CacheSplit) and isinstance(ds.train, FolderSplit)
    pil = load_dataset("imagenet", root, image_size=32)  # the same folder through PIL (Resize(37) + CenterCrop(32))
    pil.test.num_workers = 0
    got = list(ds.test.batches(3))
    want = list(pil.test.batches(3))
    # the evaluation transform at the default cache size: PIL's Resize then the centre crop, exactly
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))

    def epoch(split, seed):
        return list(split.batches(4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(seed)))

    a, b, c = epoch(ds.train, 0), epoch(_loaded(out, workers=1).train, 0), epoch(ds.train, 1)
    assert [x.shape for x, _ in a] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert all(x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1 for x, _ in a)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))  # any workers
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == [0, 0, 0, 1, 1, 1]
    # the crops and flips are the PIL path's draws (same seeds, same relative boxes): close, not equal
    pil_a = epoch(pil.train, 0)
    assert all(torch.equal(y1, y2) for (_, y1), (_, y2) in zip(a, pil_a))


def test_crop_flip_is_torchvisions_transform_with_the_same_draws():
    """The training transform of the cache path: torchvision's RandomResizedCrop + RandomHorizontalFlip on the uint8
    tensor (same random draws from the same seed), computed by torch's uint8 kernel: within one intensity level."""
    T = torchvision.transforms
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)).permute(2, 0, 1)
    reference = T.Compose([T.RandomResizedCrop(32, antialias=True), T.RandomHorizontalFlip()])
    for seed in range(20):
        torch.manual_seed(seed)
        got = decode_cache._CropFlip(32)(image)
        torch.manual_seed(seed)
        want = reference(image)
        assert got.shape == (3, 32, 32) and got.dtype == torch.uint8 and got.is_contiguous()
        assert (got.int() - want.int()).abs().max() <= 1, seed
    torch.manual_seed(0)
    assert not torch.equal(decode_cache._CropFlip(32)(image), decode_cache._CropFlip(32)(image))  # fresh draws


def test_subset_take_and_epoch_batches_across_ranks(prepared):
    _, out = prepared
    split = _loaded(out).train
    small = split.subset(4, seed=0)
    assert isinstance(small, decode_cache.CacheSplit) and len(small) == 4 and small.index.tolist() != [0, 1, 2, 3]
    x, y = next(small.batches(4))
    full = dict(zip(split.index.tolist(), torch.cat([x for x, _ in split.batches(6)])))
    assert all(torch.equal(x[i], full[j]) for i, j in enumerate(small.index.tolist()))  # rows follow the positions
    whole = list(epoch_batches(split, 2, torch.Generator().manual_seed(3)))
    ranks = [list(epoch_batches(split, 2, torch.Generator().manual_seed(3), rank=r, world_size=2)) for r in (0, 1)]
    assert [i for i, _, _ in whole] == [0, 1, 2] and all(x.shape == (2, 3, 32, 32) for _, x, _ in whole)
    for i, (_, x, y) in enumerate(whole):
        assert torch.equal(torch.cat([ranks[0][i][1], ranks[1][i][1]]), x)


def test_stale_cache_is_refused(prepared):
    root, out = prepared
    _loaded(out)
    replaced = root / "train" / "cat" / "cat_0.JPEG"  # same name, other content: the sizes digest changes
    Image.new("RGB", (40, 30), (200, 10, 10)).save(replaced, quality=50)
    with pytest.raises(ArtifactError, match=r"shapes.cache/train.json is stale: its sizes differ"):
        load_prepared(out)


def test_cache_of_another_format_or_size_is_refused(prepared, tmp_path):
    root, out = prepared
    header_path = out.parent / "shapes.cache" / "val.json"
    header = read_json(header_path)
    write_json(header_path, {**header, "format": "advlayers-decode-cache-v0"})  # a valid file of an older version
    with pytest.raises(ArtifactError, match="stale: its format, header"):
        load_prepared(out)
    other = tmp_path / "other" / "shapes.json"
    prepare_folder("shapes", root, other, image_size=32, decode="cache", cache_size=48)
    for split in ("train", "val"):  # another build's files in place of the recorded ones
        for suffix in (".u8", ".index.npy", ".json"):
            (out.parent / "shapes.cache" / f"{split}{suffix}").write_bytes(
                (other.parent / "shapes.cache" / f"{split}{suffix}").read_bytes())
    with pytest.raises(ArtifactError, match="stale: its size, header"):
        load_prepared(out)
    assert len(_loaded(other).train) == 6


@pytest.mark.parametrize("damage", ["header", "index", "truncated", "bit", "missing"])
def test_corrupt_cache_is_refused(prepared, damage):
    _, out = prepared
    folder = out.parent / "shapes.cache"
    if damage == "header":
        text = (folder / "train.json").read_text().replace('"size": 37', '"size": 38')
        (folder / "train.json").write_text(text)
        match = "train.json is corrupt"
    elif damage == "index":
        index = np.load(folder / "train.index.npy")
        index[0, 0] += 3
        np.save(folder / "train.index.npy", index)
        match = "train.index.npy is corrupt"
    elif damage == "truncated":
        data = (folder / "train.u8").read_bytes()
        (folder / "train.u8").write_bytes(data[:-10])
        match = "train.u8 is corrupt or missing"
    elif damage == "missing":
        (folder / "val.json").unlink()
        match = "val.json is missing"
    else:
        data = bytearray((folder / "train.u8").read_bytes())
        data[100] ^= 1
        (folder / "train.u8").write_bytes(bytes(data))
        match = (r"^decoded-image cache \S+train.u8 is corrupt: image 0 does not match its crc32; rebuild it: rerun "
                 r"its prepare_data job \(`snakemake -f \S+data/shapes.json`\)$")  # one line, from a worker too
        for workers in (0, 1):
            ds = _loaded(out, workers)  # opening checks the small files; each image is checked when read
            with pytest.raises(ArtifactError, match=match):
                list(ds.train.batches(6))
            with pytest.raises(ArtifactError, match=match):
                list(epoch_batches(ds.train, 6, torch.Generator().manual_seed(0)))
        return
    with pytest.raises(ArtifactError, match=match):
        load_prepared(out)


def test_named_dataset_end_to_end_and_config(tmp_path):
    """prepare_dataset('imagenet', decode='cache') -> load_prepared -> training batches; the config key."""
    from advlayers.grid import conf
    from advlayers.grid.validate import apply_schema, check
    from advlayers.grid.vocabulary import ConfigError

    root = tmp_path / "imagenet"
    _write(root / "train", n=4)
    _write(root / "val", n=2, seed=2)
    out = tmp_path / "imagenet.json"
    prepare_dataset("imagenet", root, out, decode="cache")
    ds = load_prepared(out)
    ds.train.num_workers = 0
    assert read_json(out)["cache_size"] == 256 and ds.info.image_size == 224
    (i, x, y), *_ = epoch_batches(ds.train, 4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and len(y) == 4
    plain = tmp_path / "plain.json"
    prepare_dataset("imagenet", root, plain)  # pil: the manifest as before (no decode key), no cache written
    assert "decode" not in json.loads(plain.read_text()) and not (tmp_path / "plain.cache").exists()
    with pytest.raises(ValueError, match="decode 'jpeg' is not valid; valid choices: pil, cache"):
        prepare_dataset("imagenet", root, tmp_path / "x.json", decode="jpeg")

    config = {"datasets": {"imagenet": {"root": str(root), "archs": ["resnet50"], "recipe": "imagenet",
                                        "eval": {"n": 2, "eps": 0.01, "step_size": 0.01, "steps": 1},
                                        "decode": "cache"},
                           "cifar10": {"root": None, "archs": ["resnet18"], "recipe": "cifar10",
                                       "eval": {"n": 2, "eps": 0.03, "step_size": 0.01, "steps": 1}}},
              "cutoffs": {"before": [1], "after": [5]}}
    good = apply_schema(copy.deepcopy(config))
    assert conf.prepare_params(good, "imagenet")["decode"] == "cache"
    assert "decode" not in conf.prepare_params(good, "cifar10")  # pil: the data job's params as before
    bad = copy.deepcopy(config)
    bad["datasets"]["cifar10"]["decode"] = "cache"
    with pytest.raises(ConfigError, match=r"datasets.cifar10.decode = 'cache' is not valid; valid choices: only for"):
        check(apply_schema(bad), root_exists=lambda *a: None)
    small = copy.deepcopy(config)
    small["datasets"]["imagenet"]["cache_size"] = 200
    with pytest.raises(ConfigError, match=r"imagenet.cache_size = 200 is not valid; valid choices: null or at least "
                                          r"image_size \(224\)"):
        check(apply_schema(small), root_exists=lambda *a: None)
    check(good, root_exists=lambda *a: None)


@pytest.mark.parametrize("decode", [None, "pil"])
def test_cache_size_without_the_cache_is_a_config_error(tmp_path, decode):
    """cache_size sizes the decoded-image cache only: with `decode: pil` (or no decode) it would be ignored."""
    from advlayers.grid.validate import apply_schema, check
    from advlayers.grid.vocabulary import ConfigError

    imagenet = {"root": str(tmp_path / "imagenet"), "archs": ["resnet50"], "recipe": "imagenet",
                "eval": {"n": 2, "eps": 0.01, "step_size": 0.01, "steps": 1}, "cache_size": 300}
    if decode is not None:
        imagenet["decode"] = decode
    config = {"datasets": {"imagenet": imagenet}, "cutoffs": {"before": [1], "after": [5]}}
    with pytest.raises(ConfigError, match=r"^config error: datasets.imagenet.cache_size = 300 is not valid; valid "
                                          r"choices: null \(it sizes the cache of decode: cache only\)$"):
        check(apply_schema(copy.deepcopy(config)), root_exists=lambda *a: None)
    imagenet["decode"] = "cache"
    check(apply_schema(config), root_exists=lambda *a: None)


def test_prepare_data_job_builds_the_cache(tmp_path):
    """The workflow's prepare_data job with `decode: cache` (its params name the key only then): the manifest and
    the cache beside it, read back as CacheSplits; a dry run then has nothing to redo."""
    from helpers import copy_repo, dry_run, snakemake

    root = copy_repo(tmp_path / "repo")
    _write(root / "data" / "shapes" / "train")
    _write(root / "data" / "shapes" / "val", n=2, seed=1)
    (root / "shapes.yaml").write_text(
        "device: cpu\ndatasets:\n  shapes:\n    kind: folder\n    root: data/shapes\n    image_size: 32\n"
        "    decode: cache\n    archs: [resnet18]\n    recipe: mnist5k-demo\n"
        "    eval: {n: 2, eps: 0.03, step_size: 0.01, steps: 2}\ncutoffs: {before: [1], after: [5]}\n")
    data = layout.path("data", dataset="shapes", ext="json")  # a folder dataset's manifest
    snakemake(root, data, "--cores", "1", "--configfile", "shapes.yaml", timeout=600)
    ds = load_prepared(root / data)
    assert isinstance(ds.train, decode_cache.CacheSplit) and len(ds.train) == 6 and len(ds.test) == 4
    assert (root / layout.path("data_cache", dataset="shapes") / "train.u8").is_file()
    assert dry_run(root, data, "--configfile", "shapes.yaml") == {}
