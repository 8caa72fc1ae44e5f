"""Issue 20: the Fig. 8 activation files (.npz) and the manifests of folder datasets check themselves.

A flipped byte or an edited value (mtime kept, so Snakemake sees nothing) is refused by the consumer with one
ArtifactError line naming the file, and `advlayers verify` names the file itself as corrupt. Fast: synthetic
files, no workflow run (the workflow-level cases are tests/test_faults.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlayers.analyses.features import FORMAT, load_activations, save_activations
from advlayers.core.datasets import load_prepared, prepare_folder
from advlayers.grid import layout
from advlayers.grid.vocabulary import Setting
from advlayers.io import ArtifactError
from advlayers.tools.verify import Verifier

NET = Setting("digits", "resnet18", 0, "conventional")
FLIPS = [i / 40 for i in range(1, 40)]


def _activations(n=6, k=2, c=8) -> dict:
    rng = np.random.default_rng(0)
    module = {"clean": rng.normal(size=(n * k, c)).astype(np.float32),
              "adv": rng.normal(size=(n * k, c)).astype(np.float32), "image": np.repeat(np.arange(n), k),
              "position": np.zeros(n * k, np.int64), "shape": np.array([c, 4, 4]), "vectors_per_image": np.array(k)}
    return {"meta": {"format": FORMAT, "modules": ["m1"], "n_images": n, "dataset": NET.dataset, "arch": NET.arch,
                     "seed": NET.seed, "pretraining": NET.pretraining},
            "label": np.arange(n), "pred_clean": np.arange(n), "pred_adv": (np.arange(n) + 1) % n,
            "linf": np.full(n, 0.03, np.float32), "modules": {"m1": module}}


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in ("label", "pred_clean", "pred_adv", "linf")) and all(
        np.array_equal(a["modules"]["m1"][k], b["modules"]["m1"][k]) for k in ("clean", "adv", "image"))


def _keep_mtime(path: Path, change) -> None:
    st = path.stat()
    change(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _flip(where: float):
    def change(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        raw[int(len(raw) * where)] ^= 0x10
        path.write_bytes(bytes(raw))
    return change


def _one_line_naming(e: pytest.ExceptionInfo, path: Path, *words) -> None:
    text = str(e.value)
    assert "\n" not in text and str(path) in text, text
    for w in words:
        assert w in text, text


def _verify_names(root: Path, rel: str) -> str:
    n, problems = Verifier(root).run()
    assert n >= 1 and [p.path for p in problems] == [rel], problems
    assert problems[0].kind == "corrupt"
    return problems[0].detail


@pytest.fixture
def activations(tmp_path) -> tuple[Path, str, dict]:
    rel = layout.activations_path(NET)
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    save_activations(path, _activations())
    return tmp_path, rel, load_activations(path)


@pytest.mark.parametrize("where", FLIPS)
def test_flipped_byte_in_activations_is_refused_naming_the_file(activations, where):
    """Every flipped byte either leaves the numbers as they were (zip timestamps and the like) or is refused by the
    reader (a zip CRC error used to surface as 'Bad CRC-32 for file m1/clean.npy', naming no file) and by verify."""
    root, rel, original = activations
    path = root / rel
    _keep_mtime(path, _flip(where))
    try:
        loaded = load_activations(path)
    except ArtifactError as e:
        assert "\n" not in str(e) and str(path) in str(e) and "corrupt" in str(e), str(e)
        assert _verify_names(root, rel)
        return
    assert _same(loaded, original), f"a flip at {where} changed the numbers and was accepted"


def test_edited_activation_value_is_refused(activations):
    """A value changed and the file rewritten with its metadata (recorded digest included) kept."""
    root, rel, _ = activations
    path = root / rel

    def edit(p: Path) -> None:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["m1/clean"] = arrays["m1/clean"].copy()
        arrays["m1/clean"][0, 0] += 1.0
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    _keep_mtime(path, edit)
    with pytest.raises(ArtifactError) as e:
        load_activations(path)
    _one_line_naming(e, path, "does not match its recorded digest")
    assert "recorded digest" in _verify_names(root, rel)


# --------------------------------------------------------------------------- folder-dataset manifests


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (folder / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / split / cls / f"{i}.png")
    return folder


@pytest.fixture
def manifest(tmp_path, own_folder) -> tuple[Path, str]:
    rel = layout.path("data", dataset="mine", ext="json")
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    prepare_folder("mine", own_folder, path, image_size=32)
    assert load_prepared(path).info.classes == ("cat", "dog") or list(load_prepared(path).info.classes) == ["cat", "dog"]
    assert Verifier(tmp_path).run() == (1, [])
    return tmp_path, rel


def _edit_json(key, value):
    def change(path: Path) -> None:
        data = json.loads(path.read_text())
        assert key in data
        data[key] = value
        path.write_text(json.dumps(data, indent=1) + "\n")
    return change


EDITS = {"image_size": _edit_json("image_size", 64), "mean": _edit_json("mean", [0.5, 0.5, 0.5]),
         "classes": _edit_json("classes", ["dog", "cat"]), "files": _edit_json("train_files_digest", "0" * 64),
         "root": _edit_json("root", "/elsewhere"), "flip-early": _flip(0.1), "flip-middle": _flip(0.5),
         "flip-late": _flip(0.9), "truncated": lambda p: p.write_bytes(p.read_bytes()[:40])}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_damaged_folder_manifest_is_refused_naming_the_file(manifest, edit):
    """An edited value (the digest left as it was) or a flipped byte in a folder set's manifest: load_prepared (what
    every job reads the data with) refuses it in one line naming the manifest, and verify names it as corrupt."""
    root, rel = manifest
    path = root / rel
    _keep_mtime(path, EDITS[edit])
    with pytest.raises(ArtifactError) as e:
        load_prepared(path)
    _one_line_naming(e, path, "corrupt")
    assert _verify_names(root, rel)


@pytest.mark.parametrize("damage", ["truncated", "head", "name", "tail"])
def test_damaged_prepared_tensor_file_is_one_line_naming_it(tmp_path, damage):
    """A prepared in-memory set (.pt) that is no zip archive any more is called a damaged torch file, not JSON."""
    from advlayers.core.datasets import prepare_dataset

    rel = layout.data_path("digits")
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    prepare_dataset("digits", None, path)
    change = {"truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
              "head": _flip(0.0), "name": _flip(0.00005), "tail": _flip(0.9999)}[damage]
    original = load_prepared(path)
    _keep_mtime(path, change)
    try:
        loaded = load_prepared(path)
    except ArtifactError as e:
        assert "\n" not in str(e) and str(path) in str(e) and "corrupt" in str(e) and "JSON" not in str(e), str(e)
        assert "weights_only" not in str(e)  # torch's advice to unpickle it unsafely is not passed on
        assert _verify_names(tmp_path, rel)
        return
    assert damage == "tail" and all(torch.equal(a, b) for a, b in ((loaded.train.x, original.train.x),
                                                                   (loaded.test.y, original.test.y)))
