"""A decoded-image cache of an image-folder split (config ``datasets.<d>.decode: cache``; the FFCV idea).

Decoding JPEGs with PIL is what limits a DataLoader worker (benchmarks/results.md, "Input pipeline"). The cache
decodes every image once, resizes it with PIL so that its shorter side is `size` pixels (torchvision's
``Resize(size)`` on the PIL image: bilinear with antialiasing, exactly the first step of the evaluation transform
when ``size = round(image_size * 256 / 224)``, the default) and stores it as uint8 (H, W, 3) rows of one flat file
that readers memory-map. Per split, in the folder `cache_dir_of(<prepared data manifest>)`:

    <split>.u8          the images' bytes, one after the other
    <split>.index.npy   int64 (N, 5): byte offset, height, width, label, crc32 of the image's bytes (no pickle)
    <split>.json        the header (`io.write_json`, self-digest): format, image count, classes, size, the source
                        folder's file-list digest and file-size digest, the index's sha256, the data's byte count;
                        its self-digest goes into the prepared-data manifest
    <split>.provenance.json  the code and library versions that made it, and when (not in the header, so that a
                        rebuild of the same bytes by other code keeps the header's digest; never checked)

`CacheSplit` is a `FolderSplit` (same samples, positions, batching and seeding) whose items come from the cache:
training RandomResizedCrop + horizontal flip of the uint8 tensor (`_CropFlip`: torchvision's random draws, as the
PIL path, with torch's uint8 resize kernel), evaluation Resize + CenterCrop (at the default size the crop alone);
batches cross to the device as uint8 and become float there. Opening a cache checks the header's self-digest, the
format, the source folder's file lists and sizes, the size, the index's sha256 and the data's length (a stale or
corrupt cache is a one-line ArtifactError); each image's crc32 is checked when it is read.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._torchvision import torchvision
from ..grid import layout
from ..io import ArtifactError, atomic_write, read_json, sha256_file, write_json
from .splits import FolderSplit

CACHE_FORMAT = "advlayers-decode-cache-v1"  # bump when what a cache holds or how it is made changes
EVAL_RESIZE = 256 / 224  # the evaluation transform's Resize(round(image_size * 256 / 224)) before CenterCrop
INDEX_COLUMNS = ("offset", "height", "width", "label", "crc32")


def cache_dir_of(manifest) -> Path:
    """The cache folder of a prepared folder dataset `<d>.json`: `<d>.cache` beside it (`layout` "data_cache")."""
    manifest = Path(manifest)
    return manifest.with_name(Path(layout.path("data_cache", dataset=manifest.stem)).name)


def default_size(image_size: int) -> int:
    """The cache's shorter side when the config gives none: the evaluation resize, 1.143 x image_size (256 at 224)."""
    return round(image_size * EVAL_RESIZE)


def files_digest(samples, root) -> str:
    """sha256 of a split's (relative path, label) list: the prepared-data manifest's `*_files_digest`."""
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{Path(path).relative_to(root).as_posix()}\t{label}\n".encode())
    return h.hexdigest()


def sizes_digest(samples) -> str:
    """sha256 of the source files' byte counts (a re-encoded or replaced image changes it; a copy does not)."""
    h = hashlib.sha256()
    for path, _ in samples:
        h.update(f"{os.path.getsize(path)}\n".encode())
    return h.hexdigest()


def _paths(folder, split: str) -> dict[str, Path]:
    folder = Path(folder)
    return {"data": folder / f"{split}.u8", "index": folder / f"{split}.index.npy", "header": folder / f"{split}.json",
            "provenance": folder / f"{split}.provenance.json"}


class _Decoded(torch.utils.data.Dataset):
    """Build-time items: image i decoded and resized (PIL), as a contiguous uint8 (H, W, 3) array."""

    def __init__(self, samples, size: int):
        self.samples, self.resize = samples, torchvision.transforms.Resize(size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        image = self.resize(torchvision.datasets.folder.pil_loader(self.samples[i][0]))
        return np.array(image, dtype=np.uint8), self.samples[i][1]  # a writable copy


def build(split: FolderSplit, root, folder, name: str, size: int, num_workers: int | None = None) -> dict:
    """Write the cache of `split` (a full split read from `root`) as `<folder>/<name>.*`; returns its header."""
    from ..provenance import environment

    paths = _paths(folder, name)
    rows: list[tuple[int, int, int, int, int]] = []
    workers = split.num_workers if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(_Decoded(split.samples, size), batch_size=None, num_workers=workers)

    def write(f):
        offset = 0
        for image, label in loader:
            data = np.asarray(image).tobytes()
            rows.append((offset, image.shape[0], image.shape[1], int(label), zlib.crc32(data)))
            f.write(data)
            offset += len(data)

    atomic_write(paths["data"], write)
    index = np.asarray(rows, dtype=np.int64).reshape(-1, len(INDEX_COLUMNS))
    atomic_write(paths["index"], lambda f: np.save(f, index, allow_pickle=False))
    env = environment("cpu")
    import PIL

    # beside the header, not in it: the header's digest goes into the prepared-data manifest, whose sha256 every
    # checkpoint records; a rebuild of the same bytes at another commit must not invalidate them (the index's
    # crc32s catch changed bytes; CACHE_FORMAT forces rebuilds)
    write_json(paths["provenance"], {"split": name, "pillow_version": PIL.__version__,
                                     **{k: env[k] for k in ("advlayers_version", "git_commit", "git_dirty",
                                                            "torch_version", "torchvision_version", "created")}})
    header = {"format": CACHE_FORMAT, "split": name, "n": len(index), "classes": list(split.classes), "size": size,
              "resize": "PIL bilinear with antialiasing (torchvision Resize on the PIL image), shorter side = size",
              "source": {"root": str(root), "files_digest": files_digest(split.samples, root),
                         "sizes_digest": sizes_digest(split.samples)},
              "index_sha256": sha256_file(paths["index"]), "data_bytes": int(paths["data"].stat().st_size),
              "index_columns": list(INDEX_COLUMNS)}
    write_json(paths["header"], header)
    return read_json(paths["header"])


def open_index(split: FolderSplit, root, folder, name: str, size: int, header_digest: str | None = None) -> np.ndarray:
    """The checked index of the cache `<folder>/<name>.*` of `split` (read from `root`), or a one-line
    ArtifactError: missing, corrupt (header, index, data length) or stale (another format, source or size; a
    header other than the one the prepared-data manifest recorded, `header_digest`)."""
    paths = _paths(folder, name)
    rebuild = f"rebuild it: rerun its prepare_data job (`snakemake -f {Path(folder).with_suffix('.json')}`)"
    if not paths["header"].is_file():
        raise ArtifactError(f"decoded-image cache {paths['header']} is missing; {rebuild}")
    header = read_json(paths["header"])  # corrupt: its self-digest
    found = {"format": header.get("format"), "size": header.get("size"), "n": header.get("n"),
             "classes": header.get("classes"), "files": (header.get("source") or {}).get("files_digest"),
             "sizes": (header.get("source") or {}).get("sizes_digest")}
    want = {"format": CACHE_FORMAT, "size": size, "n": len(split), "classes": list(split.classes),
            "files": files_digest(split.samples, root), "sizes": sizes_digest(split.samples)}
    stale = [k for k in want if found[k] != want[k]]
    if header_digest is not None and header.get("self_sha256") != header_digest:
        stale.append("header (not the one the prepared data recorded)")
    if stale:
        raise ArtifactError(f"decoded-image cache {paths['header']} is stale: its {', '.join(stale)} differ from "
                            f"{root} and the config; {rebuild}")
    if not paths["index"].is_file() or sha256_file(paths["index"]) != header["index_sha256"]:
        raise ArtifactError(f"decoded-image cache {paths['index']} is corrupt or missing: not the index its header "
                            f"records; {rebuild}")
    index = np.load(paths["index"], allow_pickle=False)
    size_found = paths["data"].stat().st_size if paths["data"].is_file() else None
    if size_found != header["data_bytes"]:
        raise ArtifactError(f"decoded-image cache {paths['data']} is corrupt or missing: {size_found} bytes, its "
                            f"header records {header['data_bytes']}; {rebuild}")
    return index


class _CachedImages(torch.utils.data.Dataset):
    """Items of a cache split: (uint8 (3, H, W) tensor through `transform`, label); rows are full-split positions.
    Randomness seeded per item from (epoch seed, item) as `splits._ImageFiles`; the memory map opens lazily in
    each worker (it is not pickled)."""

    def __init__(self, data_path: str, index: np.ndarray, rows: list[int], transform, seed: int):
        self.data_path, self.index, self.rows, self.transform, self.seed = data_path, index, rows, transform, seed
        self._data = None

    def __getstate__(self):
        return {**self.__dict__, "_data": None}

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, row: int) -> torch.Tensor:
        if self._data is None:
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        offset, h, w, _, crc = (int(v) for v in self.index[row])
        raw = self._data[offset:offset + h * w * 3]
        if zlib.crc32(raw) != crc:
            raise ArtifactError(f"decoded-image cache {self.data_path} is corrupt: image {row} does not match its "
                                f"crc32; rebuild it: rerun its prepare_data job (`snakemake -f "
                                f"{Path(self.data_path).parent.with_suffix('.json')}`)")
        return torch.from_numpy(np.array(raw).reshape(h, w, 3)).permute(2, 0, 1)

    def __getitem__(self, i: int):
        row = self.rows[i]
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also seeds every accelerator (lazily: ~1 ms an image)
            torch.default_generator.manual_seed((self.seed + i) % 2**63)
            return self.transform(self.image(row)), int(self.index[row, 3])


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, *size): bilinear with antialiasing, torch's uint8 kernel (the channels-last view
    of the cache's (H, W, 3) rows is its fast layout)."""
    x = x[None].contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


class _CropFlip:
    """torchvision's RandomResizedCrop(size) + RandomHorizontalFlip on a uint8 tensor, with the same random draws
    (`RandomResizedCrop.get_params`, then ``torch.rand(1) < 0.5``), the crop a view and the resize `_resize`
    (torchvision's own tensor path converts to float first: ~4x slower)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        T = torchvision.transforms
        top, left, h, w = T.RandomResizedCrop.get_params(x, [0.08, 1.0], [3 / 4, 4 / 3])
        x = _resize(x[:, top:top + h, left:left + w], (self.size, self.size))
        return (x.flip(-1) if torch.rand(1) < 0.5 else x).contiguous()


class _CentreCrop:
    """The evaluation transform: Resize(resize) if given (the cache is at another size), then CenterCrop(size)."""

    def __init__(self, size: int, resize: int | None):
        self.size, self.resize = size, resize

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            h, w = x.shape[-2:]
            short, long = (h, w) if h <= w else (w, h)
            new = (self.resize, int(self.resize * long / short))
            x = _resize(x, new if h <= w else new[::-1])
        return torchvision.transforms.functional.center_crop(x, [self.size]).contiguous()


class CacheSplit(FolderSplit):
    """A `FolderSplit` read from its decoded-image cache (module docstring); `index` = full-split positions."""

    def __init__(self, split: FolderSplit, data_path, index: np.ndarray, size: int):
        super().__init__(split.samples, split.classes, split.image_size, num_workers=split.num_workers,
                         augment=split.augment)
        self.data_path, self.cache_index, self.size = str(data_path), index, size

    def transform(self, augment: bool):
        if augment:
            return _CropFlip(self.image_size)
        return _CentreCrop(self.image_size, None if self.size == default_size(self.image_size)
                           else default_size(self.image_size))

    def dataset(self, augment: bool, seed: int) -> torch.utils.data.Dataset:
        return _CachedImages(self.data_path, self.cache_index, self.index.tolist(), self.transform(augment), seed)


def open_split(split: FolderSplit, root, folder, name: str, size: int, header_digest: str | None = None) -> CacheSplit:
    """`split` (a full split read from `root`) served from its checked cache `<folder>/<name>.*`."""
    index = open_index(split, root, folder, name, size, header_digest)
    return CacheSplit(split, _paths(folder, name)["data"], index, size)


SPLITS = ("train", "val")  # the cache files' names: the folder's subfolders


def build_dataset(train: FolderSplit, test: FolderSplit, root, folder, size: int) -> dict:
    """Caches of a folder dataset's two splits; {split: header self-digest} for the prepared-data manifest."""
    return {name: build(split, Path(root) / name, folder, name, size)["self_sha256"]
            for name, split in zip(SPLITS, (train, test))}


def open_dataset(train: FolderSplit, test: FolderSplit, root, folder, size: int, digests: dict):
    """(train, test) as `CacheSplit`s, their caches checked against the manifest's `digests` (`open_index`)."""
    return tuple(open_split(split, Path(root) / name, folder, name, size, digests.get(name))
                 for name, split in zip(SPLITS, (train, test)))
