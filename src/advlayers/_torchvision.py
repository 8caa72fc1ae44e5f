"""The one place that imports torchvision.

torchvision 0.28.0 on PyPI is a CUDA build. Next to a CPU-only torch its compiled ops (`_C.so`) cannot
load, and `import torchvision` then fails in `torchvision._meta_registrations`, which registers fake
kernels for ops that do not exist ("operator torchvision::nms does not exist"). Models, datasets and
transforms are pure Python, so when -- and only when -- the compiled ops cannot load we pre-register an
empty `_meta_registrations` module. Where torchvision works normally (a CUDA cluster) this is inert.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import types

import torch

GUARD_APPLIED = False


def _compiled_ops_load(package_dir: str) -> bool:
    libs = glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd"))
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
    except OSError:
        return False
    return True


def import_torchvision():
    global GUARD_APPLIED
    if "torchvision" in sys.modules and getattr(sys.modules["torchvision"], "models", None) is not None:
        return sys.modules["torchvision"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise ImportError("torchvision is not installed: pip install -c constraints.txt torchvision==0.28.0")
    if not _compiled_ops_load(os.path.dirname(spec.origin)):
        sys.modules.setdefault(
            "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
        )
        GUARD_APPLIED = True
    import torchvision

    return torchvision


torchvision = import_torchvision()
