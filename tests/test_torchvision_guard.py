"""The torchvision import guard: applied only when the compiled ops cannot load, inert otherwise."""

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_guard_imports_torchvision_models_and_datasets_without_dynamo():
    """`import torchvision` would load all of torch._dynamo (about 1 s of CPU per workflow job) for one name;
    advlayers serves that name lazily and leaves nothing of the stand-in behind."""
    out = run("""
        import sys
        import advlayers.core.models
        roi_align = sys.modules["torchvision.ops.roi_align"]  # (the package attribute is the roi_align function)
        assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
        assert "torch._dynamo.utils" not in sys.modules
        import torch
        assert "_dynamo" not in torch.__dict__, "a stand-in torch._dynamo is left on the torch package"

        from advlayers._torchvision import torchvision, GUARD_APPLIED
        m = torchvision.models.resnet18(num_classes=3).eval()
        assert m(torch.rand(1, 3, 32, 32)).shape == (1, 3)
        assert hasattr(torchvision.datasets, "CIFAR10") and hasattr(torchvision.transforms, "RandomResizedCrop")
        assert "torch._dynamo" not in sys.modules

        import torch._dynamo
        import torch._dynamo.utils as utils
        assert torch._dynamo.__file__ and hasattr(torch._dynamo, "reset") and hasattr(torch._dynamo, "optimize")
        assert sys.modules["torch._dynamo"] is torch._dynamo
        real = utils.is_compile_supported
        assert real.__module__ == "torch._dynamo.utils"
        forward = roi_align.is_compile_supported
        assert forward is not real  # the forwarding function stays in roi_align's namespace ...
        for device in ("cpu", "cuda", "meta"):
            assert forward(device) == real(device), device  # ... and gives the real function's answer
        print(GUARD_APPLIED, torchvision.extension._has_ops())
    """)
    applied, has_ops = out.split()
    # Exactly one of the two holds: either the compiled ops work (guard inert) or the guard stepped in.
    assert (applied == "True") != (has_ops == "True")


def test_guard_inert_when_compiled_ops_load():
    # Simulate a working CUDA install: the compiled-ops probe succeeds, so nothing is pre-registered.
    out = run("""
        import sys
        import advlayers._torchvision as g
        sys.modules.pop("torchvision._meta_registrations", None)
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        g._compiled_ops_load = lambda package_dir: True
        g.GUARD_APPLIED = False
        try:
            g.import_torchvision()
        except RuntimeError as e:  # on this CPU machine the real import then fails: proof the guard stayed out
            print("unguarded-import-failed", "torchvision::nms" in str(e))
        else:
            print("imported", g.GUARD_APPLIED)
    """)
    assert out in ("unguarded-import-failed True", "imported False")
    assert "True" in out or out == "imported False"


def test_forwarding_function_loads_the_real_dynamo_when_called():
    out = run("""
        import sys
        import advlayers.core.models
        roi_align = sys.modules["torchvision.ops.roi_align"]  # (the package attribute is the roi_align function)
        assert "torch._dynamo" not in sys.modules
        result = roi_align.is_compile_supported("cpu")  # the first call imports the real torch._dynamo
        assert "torch._dynamo" in sys.modules and sys.modules["torch._dynamo"].__file__
        from torch._dynamo.utils import is_compile_supported
        assert result == is_compile_supported("cpu")
        import torch
        assert torch._dynamo is sys.modules["torch._dynamo"]  # torch's lazy attribute gives the real package
        print("ok")
    """)
    assert out == "ok"
