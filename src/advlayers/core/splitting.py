"""Any CNN cut into the grid's modules at the points where its spatial resolution halves.

An arch named in the config (`archs: {NAME: {source: ...}}`) is built by its source:

    torchvision:mobilenet_v3_small     a torchvision model function (weights=None, num_classes=...)
    timm:resnet26d                     a timm model (the optional extra `advlayers[timm]`; pretrained=False)
    mypackage.mynets:build             a function(num_classes=...) returning an nn.Module; the config's folder
                                       (or `archs.NAME.path`) is on sys.path while importing it

The net is traced once with torch.fx and its feature-map sizes propagated on a dummy input. The first layer
with weights opens m0, each halving of the resolution after it opens the next module, and global pooling with
everything after it (non-spatial outputs) forms the last module: a net with h halvings after its first layer
has N = h + 2 modules (the paper's archs: 6). The cut between two modules must be crossed by exactly one tensor,
so the modules chain (`ModularNet`). If that does not hold, or a resolution is skipped (a stride-4 layer), the
split is ambiguous and the error says how to name the cut points (`archs.NAME.cuts`: the N - 1 fx node names
where m1..m(N-1) start; `advlayers layers NAME --nodes` lists them).
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..grid.vocabulary import MIN_MODULES, ConfigError


@dataclass(frozen=True)
class ArchSource:
    """Where a config arch comes from: `source` (see the module docstring), optional explicit `cuts` and the
    folder `path` put on sys.path to import a user builder."""

    name: str
    source: str
    cuts: tuple[str, ...] = ()
    path: str | None = None
    module_layers: tuple[int, ...] | None = None

    def as_dict(self) -> dict:
        return {"source": self.source, "cuts": list(self.cuts), "path": self.path,
                "module_layers": list(self.module_layers) if self.module_layers else None}


_SOURCES: dict[str, ArchSource] = {}


def register_source(arch: ArchSource) -> None:
    """Make a config arch buildable by name (`core.models.build_model`); re-registering the same is a no-op."""
    old = _SOURCES.get(arch.name)
    if old is not None and (old.source, old.cuts) != (arch.source, arch.cuts):
        raise ConfigError(f"arch {arch.name!r} is already registered with source {old.source!r}")
    _SOURCES[arch.name] = arch


def source_of(name: str) -> ArchSource | None:
    return _SOURCES.get(name)


def register_config_archs(config: dict, config_dir: str | None = None) -> list[str]:
    """Register every arch of the config's `archs` section (grid and core); returns their names."""
    from ..grid.vocabulary import register_module_layers

    names = []
    for name, spec in (config.get("archs") or {}).items():
        path = spec.get("path") or config_dir
        register_source(ArchSource(name, spec["source"], tuple(spec.get("cuts") or ()), path,
                                   tuple(spec["module_layers"])))
        register_module_layers(name, spec["module_layers"])
        names.append(name)
    return names


# --------------------------------------------------------------------------- building the plain net


def _call_builder(fn, label: str, num_classes: int) -> nn.Module:
    params = inspect.signature(fn).parameters
    if "num_classes" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"builder {label} must take a num_classes= argument (its signature is {inspect.signature(fn)})")
    kwargs = {"num_classes": num_classes}
    if "weights" in params:
        kwargs["weights"] = None
    net = fn(**kwargs)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"builder {label} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def build_plain(source: str, num_classes: int, path: str | None = None) -> nn.Module:
    """The freshly initialised, unsplit net that `source` names."""
    kind, _, name = source.partition(":")
    if kind == "torchvision":
        from .._torchvision import torchvision

        fn = getattr(torchvision.models, name, None)
        if not callable(fn) or name.startswith("_"):
            raise ConfigError(f"source {source!r}: torchvision.models has no model {name!r}")
        return _call_builder(fn, source, num_classes)
    if kind == "timm":
        return _build_timm(source, name, num_classes)
    if not name or not kind:
        raise ConfigError(f"source {source!r} is not valid; valid forms: torchvision:NAME, timm:NAME, package.module:function")
    added = path is not None and path not in sys.path
    if added:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(kind)
    except ImportError as e:
        raise ConfigError(f"source {source!r}: cannot import {kind!r} ({e}; the config's folder is on sys.path)") from None
    finally:
        if added:
            sys.path.remove(path)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"source {source!r}: {kind} has no function {name!r}")
    return _call_builder(fn, source, num_classes)


def _build_timm(source: str, name: str, num_classes: int) -> nn.Module:
    """A timm model, freshly initialised (pretrained=False: nothing is downloaded)."""
    from .._torchvision import torchvision  # noqa: F401 (timm imports torchvision: through the guard first)

    try:
        import timm
    except ImportError:
        raise ConfigError(f"source {source!r} needs timm, the optional extra: pip install -c constraints.txt "
                          "'advlayers[timm]'") from None
    if not timm.is_model(name):
        raise ConfigError(f"source {source!r}: timm has no model {name!r} (timm.list_models() lists them)")
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


# --------------------------------------------------------------------------- tracing and splitting


class _Normalized(nn.Module):
    def __init__(self, normalize: nn.Module, net: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x):
        return self.net(self.normalize(x))


@dataclass
class TracedNode:
    name: str
    op: str
    target: str
    shape: tuple | None
    module: int = -1
    inputs: list[str] = field(default_factory=list)


_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is_global_pool(gm, node, shape) -> bool:
    if shape is None or len(shape) != 4 or tuple(shape[-2:]) != (1, 1):
        return False
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _GLOBAL_POOLS)
    return "adaptive" in str(getattr(node.target, "__name__", node.target))


class _Tracer(torch.fx.Tracer):
    """torch.nn's modules and every module holding its own parameters or buffers stay whole (call_module nodes),
    so no tensor attribute is read outside a module and each part of the split owns its weights."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        own = next(iter(m.parameters(recurse=False)), None) is not None or next(iter(m.buffers(recurse=False)), None) is not None
        return super().is_leaf_module(m, qualname) or own


def trace(net: nn.Module, image_size: int):
    """(graph module, [TracedNode]) with each node's output shape on a zero image batch of 2 (eval mode)."""
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        tracer = _Tracer()
        gm = torch.fx.GraphModule(net, tracer.trace(net), type(net).__name__)
    except Exception as e:  # noqa: BLE001 - any tracing failure is reported in one line
        raise ConfigError(f"torch.fx cannot trace the net ({type(e).__name__}: {str(e).splitlines()[0][:150]}); "
                          "make its forward free of data-dependent control flow") from None
    training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(2, 3, image_size, image_size))
    gm.train(training)
    nodes = []
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if hasattr(meta, "shape") else None
        nodes.append(TracedNode(node.name, node.op, str(node.target), shape,
                                inputs=[a.name for a in node.all_input_nodes]))
    return gm, nodes


def _body(nodes):
    return [n for n in nodes if n.op not in ("placeholder", "output", "get_attr")]


def _segments(nodes: list[TracedNode]) -> list[list[TracedNode]]:
    """The body cut after every node whose output is then the only live tensor (constants aside): the pieces
    a module boundary cannot split (a residual block is one piece)."""
    body = _body(nodes)
    last_use = {}
    for i, n in enumerate(body):
        for name in n.inputs:
            last_use[name] = i
    for n in nodes:
        if n.op == "output":
            for name in n.inputs:
                last_use[name] = len(body)
    constants = {n.name for n in nodes if n.op == "get_attr"}
    furthest = max((last_use.get(n.name, -1) for n in nodes if n.op == "placeholder"), default=-1)
    segments, start = [], 0
    for i, n in enumerate(body):
        if furthest <= i:
            segments.append(body[start:i + 1])
            start = i + 1
        if n.name not in constants:
            furthest = max(furthest, last_use.get(n.name, -1))
    if start < len(body):
        segments.append(body[start:])
    return segments


def _has_weights(gm, segment) -> bool:
    for n in segment:
        if n.op == "call_module" and any(True for _ in gm.get_submodule(n.target).parameters()):
            return True
    return False


def _assign_by_resolution(gm, nodes: list[TracedNode], image_size: int) -> int:
    """Assigns each node its module; returns N (the head is m(N-1), one after the deepest weighted level)."""
    graph_nodes = {n.name: n for n in gm.graph.nodes}
    levels, in_head = [], False
    segments = _segments(nodes)
    for seg in segments:
        out = seg[-1]
        if in_head or out.shape is None or len(out.shape) != 4 or _is_global_pool(gm, graph_nodes[out.name], out.shape):
            in_head = True
            levels.append(None)
        else:
            levels.append(round(math.log2(image_size / out.shape[-2])))
    weighted = [lv for seg, lv in zip(segments, levels) if lv is not None and _has_weights(gm, seg)]
    if not weighted:
        raise _ambiguous("no weight layer before the pooling head")
    lowest, current = min(weighted), 0
    head = max(weighted) - lowest + 1
    for seg, level in zip(segments, levels):
        module = head if level is None else max(level - lowest, 0)
        if module < current:
            raise _ambiguous(f"node {seg[-1].name} is at a higher resolution than the node before it")
        current = min(module, head)
        for n in seg:
            n.module = current
    return head + 1


def _assign_by_cuts(nodes: list[TracedNode], cuts: tuple[str, ...]) -> int:
    """Assigns each node its module; returns N = len(cuts) + 1."""
    body = _body(nodes)
    names = [n.name for n in body]
    unknown = [c for c in cuts if c not in names]
    if unknown or len(cuts) < MIN_MODULES - 1:
        raise ConfigError(f"cuts {list(cuts)}: need N - 1 >= {MIN_MODULES - 1} fx node names where m1..m(N-1) "
                          f"start (unknown: {unknown}); `advlayers layers ARCH --nodes` lists them")
    positions = [names.index(c) for c in cuts]
    if positions != sorted(positions):
        raise ConfigError(f"cuts {list(cuts)} are not in execution order")
    for i, n in enumerate(body):
        n.module = sum(i >= p for p in positions)
    return len(cuts) + 1


def _finish_assignment(nodes: list[TracedNode], n_modules: int) -> dict[str, int]:
    """Constant (get_attr) nodes join their first user's module; checks the `n_modules` modules chain."""
    by_name = {n.name: n for n in nodes}
    users: dict[str, list[int]] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n.module)
    for n in nodes:
        if n.op == "get_attr":
            n.module = min(users.get(n.name, [0]))
    body = [n for n in nodes if n.op not in ("placeholder", "output")]
    found = sorted({n.module for n in body})
    if found != list(range(n_modules)) or n_modules < MIN_MODULES:
        raise _ambiguous(f"the trace gives modules {found}, not 0..{n_modules - 1} (a resolution skipped by a "
                         f"stride-4 layer, no pooling head, or fewer than {MIN_MODULES} modules)")
    for k in range(1, n_modules):
        crossing = {i for n in body if n.module >= k for i in n.inputs
                    if by_name[i].op not in ("placeholder", "get_attr") and by_name[i].module < k}
        if len(crossing) != 1:
            raise _ambiguous(f"{len(crossing)} tensors ({', '.join(sorted(crossing)) or 'none'}) cross the cut "
                             f"before m{k}, not one")
    for n in body:
        for i in n.inputs:
            if by_name[i].op == "placeholder" and n.module != 0:
                raise _ambiguous(f"the input is used by {n.name} in m{n.module}")
    return {n.name: n.module for n in body}


def _ambiguous(reason: str) -> ConfigError:
    return ConfigError(f"cannot split the net into modules at its downsampling points ({reason}); name the fx "
                       "nodes where m1..m(N-1) start in the config, archs.NAME.cuts: [node, ...] (N - 1 >= "
                       f"{MIN_MODULES - 1} of them; `advlayers layers NAME --nodes` lists the nodes and sizes)")


def split_net(net: nn.Module, normalize: nn.Module, image_size: int, cuts: tuple[str, ...] = ()):
    """([m0, ..., m(N-1)] as fx GraphModules, {advlayers-free module id -> name in `net`}): `normalize` then
    `net`, cut at the resolution halvings (or at `cuts`: N = len(cuts) + 1)."""
    from torch.fx.passes.split_module import split_module

    wrapped = _Normalized(normalize, net)
    gm, nodes = trace(wrapped, image_size)
    n_modules = _assign_by_cuts(nodes, cuts) if cuts else _assign_by_resolution(gm, nodes, image_size)
    assignment = _finish_assignment(nodes, n_modules)
    split = split_module(gm, wrapped, lambda node: assignment[node.name], keep_original_order=True)
    modules = [getattr(split, f"submod_{k}") for k in range(n_modules)]
    for k, module in enumerate(modules):
        inputs = [n.name for n in module.graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise _ambiguous(f"m{k} would take {len(inputs)} inputs ({', '.join(inputs)}): a tensor attribute is used "
                             "outside any submodule; wrap it in a module")
    names = {id(m): name[len("net."):] for name, m in wrapped.named_modules() if name.startswith("net.")}
    return modules, names


def describe_nodes(net: nn.Module, image_size: int) -> list[TracedNode]:
    """Every fx node of `net` (behind a normalisation) with its output shape: what `cuts` may name."""
    _, nodes = trace(_Normalized(nn.Identity(), net), image_size)
    return nodes
