"""Paper §6 (Fig. 8): activation vectors of clean and PGD images after modules m1..m4, and their .npz files.

An activation vector is the C-dimensional column z = a[:, h, w] of a module's output a (C, H, W) at one
spatial position (paper: 100 random positions from each of 1,000 images). The 2-D embeddings are in
`advlayers.analyses.embedding`, the two-sample statistics in `advlayers.analyses.divergence`.

Sampling protocol
-----------------
* Per image and module, k = min(vectors_per_image, H*W) positions, without replacement: a map with fewer
  positions than asked for (ResNet-50's m4 at 224 px has 7x7 = 49) gives every position once instead of
  repeating positions, which would only duplicate rows and fake a larger sample.
* The positions are drawn from a generator seeded by (seed, module name), so they do not depend on the
  batch size or on which other modules are sampled; the clean and the adversarial activation are read at
  the SAME positions, so row r of 'clean' and row r of 'adv' are one image and one place.
* Rows are image-major (row = i*k + j); as k differs between modules, each module carries its own `image`
  array (the image id of each row, i = the i-th image of `split.subset(n_images, seed)`).

Only `sample_activations` needs torch; it is imported there, so reading an .npz stays torch-free.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

from ..io import ArtifactError, atomic_write

FORMAT = "advlayers-activations-v2"  # v2: per-module image ids and vectors per image (v1 had one global `image`)
PER_IMAGE_KEYS = ("label", "pred_clean", "pred_adv", "linf")  # (n_images,) arrays
MODULE_KEYS = ("clean", "adv", "image", "position", "shape", "vectors_per_image")


def positions_per_image(n_positions: int, vectors_per_image: int) -> int:
    """How many vectors an image gives in a map of `n_positions` positions: min(vectors_per_image, H*W)."""
    return min(vectors_per_image, n_positions)


def _draw_positions(n_images: int, n_positions: int, k: int, generator):
    """(n_images, k) flat positions, distinct within an image; all positions in order when k == n_positions."""
    import torch

    if k == n_positions:
        return torch.arange(n_positions).expand(n_images, n_positions).clone()
    return torch.rand(n_images, n_positions, generator=generator).argsort(dim=1)[:, :k]


class _Sampler:
    """Reads the same positions of each module's output for clean and adversarial batches (hooks)."""

    def __init__(self, model, modules, n: int, vectors_per_image: int, seed: int, device):
        import torch

        self.torch, self.modules, self.n, self.k, self.seed, self.device = torch, modules, n, vectors_per_image, seed, device
        self.captured: dict = {}
        self.hooks = [model.get_submodule(m).register_forward_hook(
            lambda _module, _inputs, output, m=m: self.captured.__setitem__(m, output)) for m in modules]
        self.positions: dict = {}  # (n, k_m) flat positions, drawn when a module's shape is first seen
        self.shapes: dict = {}
        self.chunks = {m: {"clean": [], "adv": []} for m in modules}

    def read(self, condition: str, start: int, stop: int) -> None:
        """Take the positions of images start..stop-1 from the outputs the last forward pass captured."""
        torch = self.torch
        for m in self.modules:
            out = self.captured[m]
            if out.ndim != 4:
                raise ValueError(f"{m} outputs shape {tuple(out.shape)}, not a (B, C, H, W) feature map")
            b, c, h, w = out.shape
            if m not in self.positions:
                # keyed by the module's name: m1's positions do not depend on which others are sampled
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(m.encode()))
                self.positions[m] = _draw_positions(self.n, h * w, positions_per_image(h * w, self.k), g)
                self.shapes[m] = (c, h, w)
            flat = self.positions[m][start:stop].to(self.device)  # (b, k_m)
            k = flat.shape[1]
            picked = out.flatten(2).gather(2, flat.unsqueeze(1).expand(b, c, k))  # (b, c, k_m)
            self.chunks[m][condition].append(picked.transpose(1, 2).reshape(b * k, c).float().cpu())

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.captured.clear()

    def result(self) -> dict:
        torch, out = self.torch, {}
        for m in self.modules:
            k = self.positions[m].shape[1]
            flat = self.positions[m].reshape(-1)
            width = self.shapes[m][2]
            out[m] = {"clean": torch.cat(self.chunks[m]["clean"]).numpy(),
                      "adv": torch.cat(self.chunks[m]["adv"]).numpy(),
                      "image": np.repeat(np.arange(self.n, dtype=np.int64), k),
                      "position": torch.stack([flat // width, flat % width], 1).numpy(),
                      "shape": self.shapes[m], "vectors_per_image": k}
        return out


def sample_activations(model, split, *, modules=("m1", "m2", "m3", "m4"), n_images: int = 1000,
                       vectors_per_image: int = 100, attack, seed: int = 0, batch_size: int = 100,
                       device="cpu") -> dict:
    """Activation vectors after each of `modules` for `n_images` test images and their PGD counterparts.

    Images are `split.subset(n_images, seed)` (image id i = the i-th image of that subset). Each is attacked
    with `attack` (an `attacks.AttackSpec`) on its true label, model in eval mode (`attacks.perturb`, random
    start seeded by `seed`). Positions follow the module docstring's protocol.

    Returns {"meta": {...}, "label"/"pred_clean"/"pred_adv": (N,), "linf": (N,) max |x_adv - x|,
    "modules": {m: {"clean": float32 (N*k_m, C), "adv": float32 (N*k_m, C), "image": int64 (N*k_m,),
    "position": int64 (N*k_m, 2) (h, w), "shape": (C, H, W), "vectors_per_image": k_m}}}.
    """
    import torch

    from ..core.attacks import perturb

    device = torch.device(device)
    model = model.to(device).eval()
    subset = split.subset(n_images, seed=seed)
    n = len(subset)
    if n == 0 or vectors_per_image < 1:
        raise ValueError(f"need at least one image and one vector per image, got {n} images, "
                         f"vectors_per_image={vectors_per_image}")
    attack_generator = torch.Generator().manual_seed(seed)
    sampler = _Sampler(model, modules, n, vectors_per_image, seed, device)
    per_image = {"label": [], "pred_clean": [], "pred_adv": [], "linf": []}
    try:
        start = 0
        for x, y in subset.batches(batch_size, shuffle=False, augment=False, device=device):
            # The hooks also fire inside the attack; what they captured is read right after model(inputs) below.
            x_adv = perturb(model, x, y, attack, bn_mode="eval", generator=attack_generator)
            for condition, inputs in (("clean", x), ("adv", x_adv)):
                with torch.no_grad():
                    per_image[f"pred_{condition}"].append(model(inputs).argmax(1).cpu())
                sampler.read(condition, start, start + len(y))
            per_image["label"].append(y.cpu())
            per_image["linf"].append((x_adv - x).flatten(1).abs().amax(1).cpu())
            start += len(y)
    finally:
        sampler.close()
    spec = getattr(model, "spec", None)
    meta = {
        "format": FORMAT, "arch": getattr(spec, "arch", None), "num_classes": getattr(spec, "num_classes", None),
        "image_size": getattr(spec, "image_size", None), "modules": list(modules), "n_images": n,
        "vectors_per_image": vectors_per_image, "sampling_seed": seed, "attack": attack.as_dict(),
        "image_ids": f"positions in split.subset({n_images}, seed={seed})",
    }
    return {"meta": meta, **{k: torch.cat(v).numpy() for k, v in per_image.items()}, "modules": sampler.result()}


def save_activations(path, result: dict) -> None:
    """`result` of `sample_activations` as one .npz (keys 'm1/clean', 'm1/image', ...; metadata as JSON),
    written with `io.atomic_write`, so `path` is either absent or complete."""
    arrays = {key: np.asarray(result[key]) for key in PER_IMAGE_KEYS}
    for m, entry in result["modules"].items():
        for key in MODULE_KEYS:
            arrays[f"{m}/{key}"] = np.asarray(entry[key])
    meta = {k: v for k, v in result["meta"].items() if k != "self_sha256"}
    arrays["meta"] = np.array(json.dumps({**meta, "self_sha256": _arrays_digest(arrays, meta)}))
    # uncompressed: activations barely compress and load much faster
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _arrays_digest(arrays: dict, meta: dict) -> str:
    """sha256 of the arrays (names, dtypes, shapes, bytes) and the metadata of an activations file."""
    import hashlib

    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for key in sorted(k for k in arrays if k != "meta"):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_activations(path) -> dict:
    """The dict `save_activations` wrote (same structure as `sample_activations` returns); a damaged file (bad zip,
    a CRC error, a missing entry, content not matching its recorded digest) is one ArtifactError naming it."""
    import zipfile

    try:
        return _load_activations(path)
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, json.JSONDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ArtifactError(f"{path} is corrupt: not a readable activations file ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:160]}); rerun the sample_features rule") from None


def _load_activations(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise ArtifactError(f"{path} is not an activations file (no 'meta' entry)")
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"{path} is an activations file of format {meta.get('format')!r}, not {FORMAT!r}; "
                                f"rerun the sample_features rule")
        arrays = {key: data[key] for key in data.files if key != "meta"}
        recorded = meta.pop("self_sha256", None)
        if recorded != _arrays_digest(arrays, meta):
            raise ArtifactError(f"{path} is corrupt: its content does not match its recorded digest (or it records "
                                "none: made by an older version); rerun the sample_features rule")
        result = {key: arrays[key] for key in PER_IMAGE_KEYS}
        result["meta"] = meta
        result["modules"] = {}
        for m in meta["modules"]:
            entry = {key: arrays[f"{m}/{key}"] for key in MODULE_KEYS}
            entry["shape"] = tuple(int(v) for v in entry["shape"])
            entry["vectors_per_image"] = int(entry["vectors_per_image"])
            result["modules"][m] = entry
    return result
