"""A workflow config loaded and checked before any job: the schema (types, unknown keys, defaults), then what a
JSON schema cannot say (names, cross-references, the dataset folders). Every problem is one ConfigError line.

    config = validate.load("config/paper.yaml")
"""

from __future__ import annotations

import os
from pathlib import Path

from . import conf, plan
from .conf import analysis, epoch_eval_settings, eval_settings
from .vocabulary import (
    ARCHS,
    DATASETS,
    TEST_SIZES,
    DIRECTIONS,
    EMBEDDED_DATASETS,
    FOLDER_DATASETS,
    LAYER_COUNTS,
    PRETRAINED,
    RECIPES,
    ConfigError,
    known_archs,
    mask_modules,
    module_names,
    num_modules,
    part_size,
    register_folder_dataset,
    register_module_layers,
)


def apply_schema(config: dict) -> dict:
    """Validate `config` against the schema and fill in its defaults (in place, as Snakemake's `validate`
    does); a violation is one ConfigError line naming the key and what is allowed."""
    import jsonschema

    def fill(validator, properties, instance, node):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = sub["default"]
        yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, node)

    for where, value in _non_finite(config):
        raise ConfigError(f"config error: {where} = {value!r} is not a finite number; every number of the config "
                          "must be finite (no .nan, .inf)")
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": fill})(conf.schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "the config"
        raise ConfigError(f"config error: {where}: {' '.join(error.message.split())}")  # one line
    return config


def _non_finite(node, where=""):
    """(key path, value) of every NaN or infinite float in a config (JSON schema's `number` admits them, and NaN
    passes every `minimum`/`maximum`)."""
    import math

    if isinstance(node, float) and not math.isfinite(node):
        yield where or "the config", node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _non_finite(value, f"{where}.{i}")


def read_yaml(path):
    """The plain content of a YAML config file (safe loader: mappings, lists, strings, numbers, booleans, null);
    a Python object tag (`!!python/object...`) or any other YAML error is one ConfigError line naming the file,
    the line and the problem."""
    import yaml

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({' '.join(str(e).split())})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())[:200]
        if isinstance(e, yaml.constructor.ConstructorError) and "tag" in problem:
            tag = problem.split("'")[1] if problem.count("'") >= 2 else problem
            tag = tag.replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(f"config file {path}{where}: the YAML tag {tag} is not allowed (a config holds only "
                              "plain values: mappings, lists, strings, numbers, booleans, null)") from None
        raise ConfigError(f"config file {path}{where} is not valid YAML ({problem})") from None


def load(path, *, roots: bool = True) -> dict:
    """A config file: YAML, the schema (defaults filled in) and `check` (dataset folders too unless
    `roots=False`). Every problem is one ConfigError line."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist (pass --configfile PATH)")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} does not hold a mapping of config keys")
    if not {"datasets", "cutoffs"} & config.keys():
        raise ConfigError(f"config file {path} is not a workflow config (needs 'datasets' and 'cutoffs')")
    apply_schema(config)
    check(config, root_exists=check_root if roots else None)
    return config


def fill_arch_paths(config: dict, configfiles) -> None:
    """`archs.<a>.path` defaults to the folder of the (last) config file: where a package.module:function builder
    is imported from."""
    for arch in (config.get("archs") or {}).values():
        if arch.get("path") is None and configfiles:
            arch["path"] = str(Path(configfiles[-1]).resolve().parent)


# --------------------------------------------------------------------------- checks beyond the schema


def _invalid(key, value, valid):
    raise ConfigError(f"config error: {key} = {value!r} is not valid; valid choices: {', '.join(map(str, valid))}")


def check(config: dict, root_exists=None) -> None:
    """Cross-references the JSON schema cannot express; raises ConfigError naming the key and the valid choices.

    `root_exists(dataset, root)`: a check of a dataset folder (`check_root`), run before any job."""
    for name, spec in (config.get("archs") or {}).items():
        if name in ARCHS:
            _invalid("archs", name, ["a name that is not a paper arch"])
        register_module_layers(name, spec["module_layers"])
        if spec.get("cuts") and len(spec["cuts"]) != len(spec["module_layers"]) - 1:
            _invalid(f"archs.{name}.cuts", spec["cuts"], [f"{len(spec['module_layers']) - 1} fx node names (the "
                                                          f"{len(spec['module_layers'])} modules of module_layers)"])
    archs = known_archs()
    check_folder_datasets(config)
    for ds, dcfg in config["datasets"].items():
        if ds not in DATASETS and dcfg.get("kind") != "folder":
            _invalid("datasets", ds, [*DATASETS, "any name with kind: folder"])
        for arch in dcfg["archs"]:
            if arch not in archs:
                _invalid(f"datasets.{ds}.archs", arch, archs)
        if dcfg["recipe"] not in RECIPES:
            _invalid(f"datasets.{ds}.recipe", dcfg["recipe"], RECIPES)
        if root_exists is not None and ds not in EMBEDDED_DATASETS:
            root_exists(ds, dcfg.get("root"))
    _check_evals(config)
    for direction in DIRECTIONS:
        if not config["cutoffs"].get(direction):
            _invalid(f"cutoffs.{direction}", config["cutoffs"].get(direction), ["a non-empty list of cut-offs 0..N"])
    for fig, ds in (config.get("figures") or {}).items():
        if ds not in config["datasets"]:
            _invalid(f"figures.{fig}", ds, list(config["datasets"]))
    for name in ("layer_cutoff", "module_subsets", "features"):
        a = analysis(config, name)
        if a and a["dataset"] not in config["datasets"]:
            _invalid(f"analyses.{name}.dataset", a["dataset"], list(config["datasets"]))
        if a and a["arch"] not in config["datasets"][a["dataset"]]["archs"]:
            _invalid(f"analyses.{name}.arch", a["arch"], config["datasets"][a["dataset"]]["archs"])
    a = analysis(config, "reinit")
    for ds in (a or {}).get("datasets", []):
        if ds not in config["datasets"]:
            _invalid("analyses.reinit.datasets", ds, list(config["datasets"]))
        if a["arch"] not in config["datasets"][ds]["archs"]:
            _invalid("analyses.reinit.arch", a["arch"], config["datasets"][ds]["archs"])
    a = analysis(config, "layer_cutoff")
    if a:
        n = LAYER_COUNTS[a["arch"]]
        for k in a["cutoffs"]:
            if not 0 <= k <= n:
                _invalid("analyses.layer_cutoff.cutoffs", k, [f"0..{n} ({a['arch']} has {n} layers)"])
    _check_module_counts(config)
    for ds, dcfg in config["datasets"].items():
        found = {c for s, cs in plan.cells(config).items() if s.dataset == ds for c in cs}
        for cell in (dcfg.get("autoattack") or {}).get("cells", []):
            if cell != PRETRAINED and cell not in found:
                _invalid(f"datasets.{ds}.autoattack.cells", cell, [PRETRAINED, *sorted(found)])


def _check_module_counts(config: dict) -> None:
    """Cut-offs and module subsets against each arch's own module count N (6 for the paper's archs): an arch's
    own cut-offs (`archs.<arch>.cutoffs`) whether or not a dataset lists it, the top-level ones for every arch of
    every dataset that does not replace them."""
    for arch in config.get("archs") or {}:
        n = num_modules(arch)
        for direction, cs in conf.arch_cutoffs(config, arch).items():
            for c in cs:
                if c > n:
                    _invalid(f"archs.{arch}.cutoffs.{direction}", c, [f"0..{n} ({arch} has {n} modules)"])
    for ds, dcfg in config["datasets"].items():
        for arch in dcfg["archs"]:
            n = num_modules(arch)
            own = conf.arch_cutoffs(config, arch)
            hint = f"; or give {arch} its own: archs.{arch}.cutoffs" if arch in (config.get("archs") or {}) else ""
            for direction in DIRECTIONS:
                for c in ([] if direction in own else config["cutoffs"][direction]):
                    if c > n:
                        _invalid(f"cutoffs.{direction}", c, [f"0..{n} ({arch} of datasets.{ds} has {n} modules{hint})"])
    a = analysis(config, "features")
    if a:
        n = num_modules(a["arch"])
        for m in conf.with_defaults(a, "analyses", "features")["modules"]:
            if m not in module_names(n):
                _invalid("analyses.features.modules", m, [f"m0..m{n - 1} ({a['arch']} has {n} modules; the default "
                                                          "m1..m4 is the paper's six-module choice)"])
    a = analysis(config, "module_subsets")
    for mask in (a or {}).get("subsets") or []:
        n = num_modules(a["arch"])
        try:
            mask_modules(mask, n)
        except ConfigError:
            _invalid("analyses.module_subsets.subsets", mask, [f"{n} characters of 0/1 ({a['arch']} has {n} modules)"])


def _check_evals(config: dict) -> None:
    """Each evaluation (the datasets', reinit's, features') has its attack's settings, and its test images fit
    in the image part they are drawn from."""
    for ds, dcfg in config["datasets"].items():
        for name in (None, "reinit", "features"):
            ev = eval_settings(config, ds, name)
            missing = [k for k in ("step_size", "steps") if ev["attack"] in ("pgd", "apgd") and k not in ev]
            where = f"datasets.{ds}.eval" if name is None else f"analyses.{name}.eval (over datasets.{ds}.eval)"
            if missing:
                _invalid(where, ev, [f"a {ev['attack']} evaluation needs {' and '.join(missing)}"])
            counts = {"n": ev["n"]}
            if name is None:
                counts["autoattack.n"] = (dcfg.get("autoattack") or {}).get("n")
            if name == "features" and (analysis(config, "features") or {}).get("dataset") == ds:
                counts["n_images"] = analysis(config, "features")["n_images"]
            n_test = test_size(ds, dcfg)
            for key, n in counts.items():
                _check_part_size(f"{where}: {key}", ds, ev["images"], n, n_test)
        epoch = epoch_eval_settings(config, ds)
        if epoch is not None:
            where = f"datasets.{ds}.eval_each_epoch (PGD with datasets.{ds}.eval's eps and step_size)"
            if epoch["step_size"] is None or epoch["steps"] is None:
                raise ConfigError(f"config error: {where} needs datasets.{ds}.eval.step_size and a number of steps "
                                  f"(datasets.{ds}.eval.steps or eval_each_epoch.steps)")
            _check_part_size(f"{where}: n", ds, "tuning", epoch["n"], test_size(ds, dcfg))


def _check_part_size(key: str, dataset: str, part: str, n, n_test: int | None) -> None:
    """n test images must fit in the image part they are drawn from (`vocabulary.part_size`); a test split whose
    size is unknown before the data job (a folder not there yet) is checked by the jobs."""
    if n is None or n_test is None:
        return
    size = part_size(dataset, part, n_test)
    if n > size:
        raise ConfigError(f"config error: {key} = {n} test images, but the {part} part of {dataset}'s test split has "
                          f"{size} (eval.images: {part}); choose at most {size}, or null for the whole part")


# --------------------------------------------------------------------------- dataset folders (checked before any job)

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
LAYOUTS = {
    "cifar10": f"<root>/{CIFAR_DIR}/ with data_batch_1..5, test_batch, batches.meta (torchvision's CIFAR10 layout)",
    "imagenette": "an imagenette2*.tgz archive, its extracted folder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) "
    "or that folder's parent (imagenette2-320 or full size: the paper trains at 224 px)",
    "imagenet": "<root>/train/<class>/* and <root>/val/<class>/* (ImageFolder layout, val sorted into classes)",
}


FOLDER_LAYOUT = "<root>/train/<class>/* and <root>/val/<class>/* (ImageFolder layout: one folder per class)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def test_size(dataset: str, dcfg: dict) -> int | None:
    """The test split's size where known without torch: the embedded and CIFAR sets, or a `kind: folder`
    dataset's image files in <root>/val (None if its root is not there)."""
    if dataset in TEST_SIZES:
        return TEST_SIZES[dataset]
    if dataset in DATASETS:  # a built-in dataset of unknown size: the jobs check the loaded split
        return None
    val = os.path.join(os.path.expanduser(str(dcfg.get("root"))), "val")
    if dcfg.get("kind") != "folder" or not os.path.isdir(val):
        return None
    return sum(f.lower().endswith(IMAGE_SUFFIXES) for _, _, files in os.walk(val) for f in files)


def check_folder_datasets(config: dict) -> None:
    """Names and settings of `kind: folder` datasets; an eval `n` above the test set size (where known without
    torch: the embedded and CIFAR sets, folders) is an error."""
    for ds, dcfg in config["datasets"].items():
        if dcfg.get("kind") == "folder" and ds in DATASETS:
            _invalid(f"datasets.{ds}.kind", "folder", [f"a dataset name other than {', '.join(DATASETS)}"])
        if dcfg.get("kind") != "folder":
            for key in ("image_size", "mean", "std"):
                if dcfg.get(key) is not None:
                    _invalid(f"datasets.{ds}.{key}", dcfg[key], ["only for datasets of kind: folder"])
        else:
            register_folder_dataset(ds)
        if not (ds in FOLDER_DATASETS or dcfg.get("kind") == "folder"):
            for key, unset in (("decode", "pil"), ("cache_size", None)):
                if dcfg.get(key, unset) != unset:
                    _invalid(f"datasets.{ds}.{key}", dcfg[key], ["only for image-folder datasets (imagenette, "
                                                                 "imagenet, kind: folder)"])
        elif dcfg.get("cache_size") is not None and dcfg.get("decode", "pil") != "cache":  # else ignored
            _invalid(f"datasets.{ds}.cache_size", dcfg["cache_size"],
                     ["null (it sizes the cache of decode: cache only)"])
        elif (dcfg.get("cache_size") or 1e9) < (dcfg.get("image_size") or 224):  # crops would be upsampled
            _invalid(f"datasets.{ds}.cache_size", dcfg["cache_size"], [f"null or at least image_size "
                                                                       f"({dcfg.get('image_size') or 224})"])
        size = test_size(ds, dcfg)
        for name in (None, "reinit", "features"):
            n = eval_settings(config, ds, name).get("n")
            where = f"datasets.{ds}.eval.n" if name is None else f"analyses.{name}.eval.n"
            if size is not None and n is not None and n > size:
                found = f"in {dcfg['root']}/val" if dcfg.get("kind") == "folder" else "test images"
                raise ConfigError(f"config error: {where} = {n} is above the test set size of {ds} ({size} {found}); "
                                  f"valid: 1..{size} or null (all)")


def check_root(dataset: str, root) -> None:
    """One-line ConfigError unless `root` looks like `dataset`'s download (a cheap look at the layout; the
    data job verifies the files themselves). The workflow cannot download: the message says what to put there."""
    key = f"datasets.{dataset}.root"
    expected = LAYOUTS.get(dataset, FOLDER_LAYOUT)
    if root is None:
        raise ConfigError(f"config error: {key} is not set; point it at {expected}")
    path = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.exists(path):
        raise ConfigError(f"config error: {key} = {root!r} does not exist; expected {expected}")
    if dataset == "cifar10":
        folder = path if os.path.isfile(os.path.join(path, "batches.meta")) else os.path.join(path, CIFAR_DIR)
        missing = [f for f in CIFAR_FILES if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise ConfigError(f"config error: {key} = {root!r} lacks {', '.join(missing)}; expected {expected}")
    elif dataset == "imagenette":
        if os.path.isfile(path):
            return
        entries = os.listdir(path)
        if not ({"train", "val"} <= set(entries) or any(e.startswith("imagenette2") for e in entries)):
            raise ConfigError(f"config error: {key} = {root!r} holds neither train/ and val/ nor an imagenette2* "
                              f"folder or archive; expected {expected}")
    else:  # imagenet and `kind: folder` datasets
        missing = [s for s in ("train", "val") if not os.path.isdir(os.path.join(path, s))]
        if missing:
            raise ConfigError(f"config error: {key} = {root!r} lacks {'/ and '.join(missing)}/; expected "
                              f"{expected}")
