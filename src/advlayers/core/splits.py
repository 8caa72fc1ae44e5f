"""Train/test splits that yield ``(x float32 in [0, 1], y int64)`` batches, and their batching.

Small sets are held in memory as uint8 tensors (`TensorSplit`, which can live on the GPU) and augmented a whole
batch at a time. Image folders are streamed from disk through a `DataLoader` (`FolderSplit`). Both draw
shuffling and augmentation only from the ``generator`` passed to ``batches``, so a run is reproducible from one
seed; unshuffled, unaugmented batches (evaluation's) draw nothing at all. `epoch_batches` is the training loop's
view (ranks of a DDP group, resuming mid-epoch).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._torchvision import torchvision
from ..grid import vocabulary as vocab
from ..io import ArtifactError

FOLDER_IMAGE_SIZE = 224  # paper: ImageNet-style training resolution


@dataclass(frozen=True)
class AugmentSpec:
    """Batched augmentation of an in-memory split (folder splits use RandomResizedCrop + flip instead)."""

    crop_padding: int = 0  # random crop of the original size after zero-padding by this many pixels
    flip: bool = False  # random horizontal flip (never for digits: it changes their meaning)


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
        return self.take(_subset_indices(len(self), n, seed))

    def take(self, idx: Tensor) -> TensorSplit:
        """The samples at positions `idx` of this split (their full-split positions kept in `index`)."""
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
            # the CPU generator only: torch.manual_seed also seeds every accelerator (lazily: ~1 ms an image)
            torch.default_generator.manual_seed((self.seed + index) % 2**63)
            return self.transform(image), label


def default_workers(limit: int = 16) -> int:
    """DataLoader workers of a process: the CPUs it may run on (SLURM's allocation, not the node's count) shared
    by the node's DDP ranks (torchrun's LOCAL_WORLD_SIZE), at most `limit` (benchmarks/results.md, "Input
    pipeline": one worker decodes ~250 ImageNet-like JPEGs/s, a GPU needs up to ~22 of them; ~4 reading the
    decoded-image cache, `decode_cache`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(limit, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


class FolderSplit:
    """A streamed split of image files, ImageFolder-style: `samples` are (path, class index)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], image_size: int = FOLDER_IMAGE_SIZE,
                 *, num_workers: int | None = None, augment: AugmentSpec = AugmentSpec(flip=True)):
        self.samples, self.classes, self.image_size, self.augment = list(samples), list(classes), image_size, augment
        self.num_workers = default_workers() if num_workers is None else num_workers
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
        return self.take(_subset_indices(len(self), n, seed))

    def take(self, idx: Tensor) -> FolderSplit:
        """The samples at positions `idx` of this split (their full-split positions kept in `index`)."""
        split = copy.copy(self)  # a subclass (`decode_cache.CacheSplit`) keeps its reader
        split.samples, split.index = [self.samples[i] for i in idx.tolist()], self.index[idx]
        return split

    def transform(self, augment: bool) -> Callable:
        T = torchvision.transforms
        if augment:
            steps = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            steps = [T.Resize(round(self.image_size * 256 / 224)), T.CenterCrop(self.image_size)]
        return T.Compose([*steps, T.ToTensor()])

    def dataset(self, augment: bool, seed: int) -> torch.utils.data.Dataset:
        """The items of this split (x float in [0, 1] or uint8, label), each one's randomness from (seed, item)."""
        return _ImageFiles(self.samples, self.transform(augment), seed)

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                device="cpu", progress: str | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        device = torch.device(device)
        count = _num_batches(len(self), batch_size, drop_last)
        # nothing random (evaluation): no draw, so that a caller without a generator leaves the global RNG, which
        # dropout draws from, where it was (config eval_each_epoch: training unchanged)
        seed = int(torch.randint(2**62, (), generator=generator)) if shuffle or augment else 0
        loader = torch.utils.data.DataLoader(
            self.dataset(augment, seed), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
        )
        for x, y in _progress(_unwrapped(loader), count, progress):
            yield _to_float(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


def _unwrapped(loader):
    """`loader`'s batches; an ArtifactError raised in a worker (a decoded-image cache's crc32 mismatch) comes back as
    its own one line, not as PyTorch's re-raise with the worker's whole traceback in the message."""
    try:
        yield from loader
    except ArtifactError as e:
        lines = str(e).strip().splitlines()
        if len(lines) < 2 or not lines[0].startswith("Caught "):  # raised in this process: already one line
            raise
        raise ArtifactError(lines[-1].partition(f"{type(e).__name__}: ")[2] or lines[-1]) from None


def _to_float(x: Tensor) -> Tensor:
    """uint8 batches (a decoded-image cache's: 4x less to copy) become float in [0, 1] on their device."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def image_part(split, part: str, dataset: str):
    """The tuning or confirmation images of a test split (docs/claims-v2.md): tuning = ``split.subset(T,
    seed=0)`` (`grid.vocabulary.tuning_size`: 500 for MNIST-5k, else 10% of the split), confirmation = every
    other image, in split order. The same for every net; `index` keeps the full split's positions."""
    vocab.check("image part (config eval.images)", part, vocab.IMAGE_PARTS)
    n = len(split)
    tuning = vocab.tuning_size(dataset, n)
    if not 0 < tuning < n:
        raise ValueError(f"the test split of {dataset!r} has {n} images: too few for {tuning} tuning images and "
                         "at least one confirmation image")
    idx = _subset_indices(n, tuning, vocab.TUNING_SEED)
    if part == "confirmation":
        keep = torch.ones(n, dtype=torch.bool)
        keep[idx] = False
        idx = keep.nonzero().flatten()
    return split.take(idx)


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
        split.dataset(True, seed), batch_sampler=slices,
        num_workers=split.num_workers, pin_memory=device.type == "cuda",
    )
    for i, (x, y) in zip(steps, _unwrapped(loader)):
        yield i, _to_float(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
