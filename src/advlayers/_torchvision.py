"""The one place that imports torchvision.

torchvision 0.28.0 on PyPI is a CUDA build. Next to a CPU-only torch its compiled ops (`_C.so`) cannot
load, and `import torchvision` then fails in `torchvision._meta_registrations`, which registers fake
kernels for ops that do not exist ("operator torchvision::nms does not exist"). Models, datasets and
transforms are pure Python, so when -- and only when -- the compiled ops cannot load we pre-register an
empty `_meta_registrations` module. Where torchvision works normally (a CUDA cluster) this is inert.

Import cost: `import torchvision` imports `torchvision.ops.roi_align`, whose one module-level import
`from torch._dynamo.utils import is_compile_supported` loads all of torch._dynamo (about 1 s of CPU per
process, a large part of every workflow job's start-up). While torchvision is imported, that one name is
served by a forwarding function that imports the real torch._dynamo when first called; afterwards nothing of
the stand-in stays in `sys.modules`, so `torch.compile` and `import torch._dynamo` work as usual.
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
    with _dynamo_deferred():
        import torchvision

    return torchvision


def _is_compile_supported(device_type):
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


class _dynamo_deferred:
    """Serve `torch._dynamo.utils.is_compile_supported` lazily while torchvision is imported (see above)."""

    NAMES = ("torch._dynamo", "torch._dynamo.utils")

    def __enter__(self):
        self.active = "torch._dynamo" not in sys.modules
        if self.active:
            package = types.ModuleType("torch._dynamo")
            package.__path__ = []  # a package with no submodules: any other import from it fails loudly
            utils = types.ModuleType("torch._dynamo.utils")
            utils.is_compile_supported = _is_compile_supported
            package.utils = utils
            self.package = package
            sys.modules.update({"torch._dynamo": package, "torch._dynamo.utils": utils})

    def __exit__(self, *exc):
        if self.active:
            for name in self.NAMES:
                sys.modules.pop(name, None)
            # the import system set torch._dynamo = our package; torch.__getattr__ loads the real one lazily
            if torch.__dict__.get("_dynamo") is self.package:
                del torch.__dict__["_dynamo"]


torchvision = import_torchvision()
