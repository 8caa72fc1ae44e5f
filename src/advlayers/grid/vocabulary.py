"""The grid's vocabulary: the names of the protocol and the cells they make (standard library only).

docs/protocol.md's glossary uses the same words:

pretraining   how a net was first trained: "conventional" or "adversarial".
retraining    how the retrained layers are trained: always the opposite of the pretraining (paper §3).
mode          what one `core.training.train` call does: "conventional" or "adversarial" (pretraining and
              retraining are modes of the two stages).
module        m0..m(N-1), the N parts a net is cut into at its downsampling layers (`core.models`); the paper's
              archs have N = 6 (m0..m5), a config arch the N of its split (`num_modules`, at least 2).
layer         a conv/linear layer with the BatchNorm after it; ResNet-18 has 21 (`MODULE_LAYERS`).
cell          one retrained net: the set of layers re-initialised and retrained, the rest frozen. Written
              canonically as a module mask "m110000" (m0 and m1) when it is a union of whole modules, else
              as a layer range "l0-7" (layers 0..6). The cut-off experiment's 'before 2', the layer cut-off 5
              and the module subset 110000 are all the cell "m110000": computed once, used by every figure.
cut-off       (Fig. 2-4) 'before c' retrains m0..m(c-1), 'after c' retrains m(c)..m(N-1) (c in 0..N).
layer cut-off (Fig. 5) 'before k' retrains the first k layers.
module subset (Fig. 6) any set of modules, an N-character mask (character i = m_i retrained); 2^N of them.
rewind/redraw (Fig. 7) one layer set back to its epoch-0 values / to a fresh random draw; no retraining.
              (Retraining always starts its layers from a fresh draw.)
seed          the training seed (config `seeds`); each seed has its own checkpoints and table rows.
setting       one pretrained net and everything made from it: (dataset, arch, seed, pretraining).
group         the cells one retraining job trains (config `grouping`): one cell per job on a cluster.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

PRETRAININGS = ("conventional", "adversarial")
DIRECTIONS = ("before", "after")
NUM_MODULES = 6  # the paper archs' module count; a config arch has the N of its split (`num_modules`)
# At least 2: the last module is always the head (global pooling and everything after it) and at least one
# module of layers must come before it; with one module the only cell would be the whole net.
MIN_MODULES = 2


def module_names(n: int = NUM_MODULES) -> tuple[str, ...]:
    """('m0', ..., 'm(n-1)')."""
    return tuple(f"m{i}" for i in range(n))


MODULE_NAMES = module_names()
DATASETS = ("mnist5k", "digits", "cifar10", "imagenette", "imagenet")
FOLDER_DATASETS = ("imagenette", "imagenet")  # streamed image folders; the others are held in memory
USER_FOLDER_DATASETS: set[str] = set()  # a config's `kind: folder` datasets (`register_folder_dataset`)
EMBEDDED_DATASETS = ("mnist5k", "digits")  # shipped inside installed packages: no root, no download
# Layers (conv/linear + BatchNorm, `core.models.layers`) in each module m0..m5, per arch (a config arch: m0..m(N-1));
# the counts are
# checked against the built models by tests/test_grid.py.
MODULE_LAYERS = {
    "resnet18": (1, 4, 5, 5, 5, 1),
    "resnet50": (1, 10, 13, 19, 10, 1),
    "vgg11_bn": (1, 1, 2, 2, 2, 3),
    "vgg16_bn": (2, 2, 3, 3, 3, 3),
}
ARCHS = tuple(MODULE_LAYERS)  # the paper's archs; a config's `archs` adds its own (`register_module_layers`)
LAYER_COUNTS = {arch: sum(counts) for arch, counts in MODULE_LAYERS.items()}
ANALYSES = ("layer_cutoff", "module_subsets", "reinit", "features")
REINIT_OPERATIONS = ("rewind", "redraw")
REDRAW_SEED_OFFSET = 1_000_000  # fresh draws (retraining, Fig. 7 redraw) use seed + this: not pretraining's stream
BN_POLICIES = ("reset", "keep_stats")
EMBED_METHODS = ("tsne", "umap", "trimap")
RECIPES = ("cifar10", "imagenette", "imagenet", "mnist5k-demo")  # `core.recipes.PRESETS` (checked there)
PRETRAINED = "pretrained"  # the cell id of a pretrained net itself (nothing retrained)
# Tuning and confirmation images (docs/claims-v2.md): every test split is partitioned once, the same for every
# net. The tuning part is `split.subset(T, seed=0)` (`core.splits.image_part`), the confirmation part the rest.
# MNIST-5k: T = 500, exactly the 500 images every v1 result used; otherwise T = 10% of the test split.
IMAGE_PARTS = ("confirmation", "tuning")
TUNING_SEED = 0
TUNING_SIZES = {"mnist5k": 500}
# test images of each dataset's split (`core.datasets`; Imagenette = imagenette2's val folder): what a config's
# `eval.n` is checked against before any job (the jobs check the loaded split again)
TEST_SIZES = {"mnist5k": 1000, "digits": 360, "cifar10": 10000, "imagenette": 3925, "imagenet": 50000}


def tuning_size(dataset: str, n_test: int) -> int:
    """T, the tuning images of a test split of `n_test` images: 500 for MNIST-5k, else ceil(10%)."""
    return TUNING_SIZES.get(dataset, -(-n_test // 10))


def part_size(dataset: str, part: str, n_test: int | None = None) -> int:
    """Images in `part` ("tuning" | "confirmation") of `dataset`'s test split (of `n_test` images, default the
    dataset's known size)."""
    check("image part", part, IMAGE_PARTS)
    n_test = TEST_SIZES[dataset] if n_test is None else n_test
    tuning = tuning_size(dataset, n_test)
    return tuning if part == "tuning" else n_test - tuning


class ConfigError(ValueError):
    """A config (or argument) that names something the grid does not know; the message is one line."""


def check(name: str, value, valid):
    """`value` if it is one of `valid`, else a one-line ConfigError naming the valid choices."""
    if value not in valid:
        raise ConfigError(f"{name} = {value!r} is not valid; valid choices: {', '.join(map(str, valid))}")
    return value


def register_module_layers(arch: str, module_layers) -> None:
    """Add a config arch (`archs.NAME.module_layers`: its layers per module m0..m(N-1), as `advlayers layers
    NAME` prints them; N = its length, the arch's module count) to the grid's vocabulary; the built net is checked
    against it (`core.models.build_model`)."""
    counts = tuple(int(c) for c in module_layers)
    if len(counts) < MIN_MODULES or min(counts) < 0 or sum(counts) < 1:
        raise ConfigError(f"archs.{arch}.module_layers = {list(counts)} is not valid; valid: {MIN_MODULES} or more "
                          "layer counts (m0..m(N-1)) as `advlayers layers` prints them")
    if arch in ARCHS:
        raise ConfigError(f"archs.{arch}: {arch} is a paper arch; choose another name")
    MODULE_LAYERS[arch] = counts
    LAYER_COUNTS[arch] = sum(counts)


def register_folder_dataset(name: str) -> None:
    """A config's own ImageFolder dataset (`kind: folder`): prepared as a JSON manifest, streamed from disk."""
    USER_FOLDER_DATASETS.add(name)


def is_folder_dataset(name: str) -> bool:
    return name in FOLDER_DATASETS or name in USER_FOLDER_DATASETS


def known_archs() -> tuple[str, ...]:
    """The paper's archs and those a config registered."""
    return tuple(MODULE_LAYERS)


def num_modules(arch: str) -> int:
    """N, the modules m0..m(N-1) an arch is cut into: 6 for the paper's archs, a config arch's split."""
    return len(MODULE_LAYERS[check("arch", arch, known_archs())])


def all_modules_cell(arch: str) -> str:
    """The cell retraining every module of `arch` ('m111111' for a six-module arch): cut-off 'before N', the
    retraining controls of the claims v2."""
    return "m" + "1" * num_modules(arch)


def opposite(pretraining: str) -> str:
    """The retraining mode of a setting: the opposite of its pretraining (paper §3)."""
    check("pretraining", pretraining, PRETRAININGS)
    return "adversarial" if pretraining == "conventional" else "conventional"


@dataclass(frozen=True, order=True)
class Setting:
    """Where cells live: one pretrained net (dataset, arch, seed, pretraining)."""

    dataset: str
    arch: str
    seed: int
    pretraining: str

    @property
    def retraining(self) -> str:
        return opposite(self.pretraining)

    def identity(self) -> dict:
        """The fields an artifact of this setting records about itself (checked by its consumers)."""
        return {"dataset": self.dataset, "arch": self.arch, "seed": self.seed, "pretraining": self.pretraining}


# --------------------------------------------------------------------------- cells

MASK_CHARS = frozenset("01")


def module_mask(modules, n: int = NUM_MODULES) -> str:
    """('m0', 'm2') -> '101000' (character i = '1' iff m_i is in the set; `n` modules)."""
    names = module_names(n)
    unknown = sorted(set(modules) - set(names))
    if unknown:
        raise ConfigError(f"unknown module(s) {unknown}; valid: {', '.join(names)}")
    return "".join("1" if m in modules else "0" for m in names)


def mask_modules(mask: str, n: int | None = NUM_MODULES) -> tuple[str, ...]:
    """'101000' -> ('m0', 'm2'): a mask of `n` characters (an arch's module count; None: any length from
    MIN_MODULES, e.g. a cell id's own mask)."""
    if not (isinstance(mask, str) and set(mask) <= MASK_CHARS and len(mask) == (len(mask) if n is None else n)
            and len(mask) >= MIN_MODULES):
        size, k = (f"{n}", n) if n is not None else (f"{MIN_MODULES} or more", NUM_MODULES)
        raise ConfigError(f"a module subset is {size} characters of 0/1 (e.g. '{('101' + '0' * k)[:k]}'), got {mask!r}")
    return tuple(f"m{i}" for i, bit in enumerate(mask) if bit == "1")


def as_mask(value, n: int = NUM_MODULES) -> str:
    """A module subset of `n` modules given as a mask ('101000'), a mask whose leading zeros a CSV reader dropped
    (1000), a 'm0,m2' / 'm0+m2' string, '' / 'none', or a sequence of module names -> its mask."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = str(int(value)).zfill(n)
    if isinstance(value, str):
        if len(value) == n and set(value) <= MASK_CHARS:
            return value
        value = [v for v in value.replace("+", ",").replace(" ", ",").split(",") if v and v != "none"]
    return module_mask([str(v).strip() for v in value], n)


def all_subsets(n: int = NUM_MODULES) -> list[str]:
    """The 2^n module masks (64 for six modules), '000000' (nothing retrained) first."""
    return ["".join("1" if mask >> i & 1 else "0" for i in range(n)) for mask in range(2**n)]


def check_cutoff(cutoff, n: int = NUM_MODULES, where: str = "cut-off") -> int:
    """A module cut-off of an n-module arch: an integer in 0..n, else a one-line ConfigError naming the range."""
    if not (isinstance(cutoff, int) and not isinstance(cutoff, bool) and 0 <= cutoff <= n):
        raise ConfigError(f"{where} must be an integer in 0..{n}, got {cutoff!r}")
    return cutoff


def cutoff_mask(cutoff: int, direction: str, n: int = NUM_MODULES) -> str:
    """Cut-off c of an n-module arch: 'before' retrains m0..m(c-1), 'after' m(c)..m(n-1) (c in 0..n)."""
    check("direction", direction, DIRECTIONS)
    check_cutoff(cutoff, n)
    before = "1" * cutoff + "0" * (n - cutoff)
    return before if direction == "before" else "".join("1" if b == "0" else "0" for b in before)


def module_spans(arch: str) -> list[range]:
    """The layer indices of each module m0..m(N-1)."""
    check("arch", arch, known_archs())
    spans, start = [], 0
    for count in MODULE_LAYERS[arch]:
        spans.append(range(start, start + count))
        start += count
    return spans


def layer_range(arch: str, k: int, direction: str = "before") -> range:
    """Layer cut-off k: 'before' = layers 0..k-1, 'after' = layers k..L-1."""
    check("direction", direction, DIRECTIONS)
    n = LAYER_COUNTS[check("arch", arch, known_archs())]
    if not (isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= n):
        raise ConfigError(f"layer cut-off must be an integer in 0..{n} ({arch} has {n} layers), got {k!r}")
    return range(0, k) if direction == "before" else range(k, n)


def cell_of_layers(arch: str, layers) -> str | None:
    """The canonical cell id of a set of retrained layers (None for the empty set, i.e. the pretrained net)."""
    layers = sorted(set(layers))
    if not layers:
        return None
    spans = module_spans(arch)
    covered = [m for m, span in enumerate(spans) if set(span) <= set(layers)]
    if sorted(i for m in covered for i in spans[m]) == layers:
        return "m" + "".join("1" if m in covered else "0" for m in range(len(spans)))
    if layers != list(range(layers[0], layers[-1] + 1)):
        raise ConfigError(f"layers {layers} are neither whole modules nor one contiguous range")
    return f"l{layers[0]}-{layers[-1] + 1}"


def cell_of_mask(mask: str) -> str | None:
    """The cell of a module subset of any module count (None for '000000', the pretrained net)."""
    return "m" + mask if mask_modules(mask, None) else None


def is_module_cell(cell: str) -> bool:
    """Whether a cell id is a module mask ('m110000'), not a layer range ('l0-7')."""
    return cell.startswith("m")


def cell_mask(cell: str) -> str:
    """The module mask of a module cell: 'm110000' -> '110000' (any module count)."""
    if not is_module_cell(cell):
        raise ConfigError(f"cell {cell!r} is a layer range, not a module mask")
    mask_modules(cell[1:], None)
    return cell[1:]


def cell_layers(arch: str, cell: str) -> list[int]:
    """Layer indices a cell retrains."""
    spans = module_spans(arch)
    if is_module_cell(cell):
        mask = cell_mask(cell)
        if len(mask) != len(spans):
            raise ConfigError(f"cell {cell!r} is not a module cell of {arch}: it has {len(spans)} modules, a module "
                              f"cell is 'm' + {len(spans)} bits")
        return [i for m in mask_modules(mask, None) for i in spans[int(m[1:])]]
    try:
        start, stop = (int(v) for v in cell[1:].split("-"))
    except ValueError:
        raise ConfigError(f"a cell is 'm' + {len(spans)} bits or 'l<start>-<stop>', got {cell!r}") from None
    if not (cell.startswith("l") and 0 <= start < stop <= LAYER_COUNTS[arch]):
        raise ConfigError(f"cell {cell!r} is not a layer range of {arch} (0..{LAYER_COUNTS[arch]})")
    return list(range(start, stop))


def cell_modules(arch: str, cell: str) -> list[str]:
    """The modules a cell retrains (wholly or in part), in order."""
    spans = module_spans(arch)
    chosen = set(cell_layers(arch, cell))
    return [f"m{m}" for m, span in enumerate(spans) if chosen & set(span)]


def describe_cell(arch: str, cell: str) -> str:
    """'m0-m1' / 'm0+m2' for module cells, 'layers 0-6' for a layer range (figure labels)."""
    if is_module_cell(cell):
        modules = mask_modules(cell_mask(cell), None)
        idx = [int(m[1:]) for m in modules]
        if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1:
            return f"m{idx[0]}-m{idx[-1]}"
        return "+".join(modules)
    layers = cell_layers(arch, cell)
    return f"layers {layers[0]}-{layers[-1]}"


def cell_order(cell: str):
    """Module cells first, then layer ranges; each in id order."""
    return (not is_module_cell(cell), cell)
