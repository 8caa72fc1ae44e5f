"""`advlayers layers ARCH`: the split and the layer table of a paper arch, a config arch or a source.

    advlayers layers resnet18
    advlayers layers torchvision:mobilenet_v3_small            any torchvision/timm model or package.module:function
    advlayers layers mynet --config config/own.yaml             an arch of a config's `archs` section
    advlayers layers torchvision:mobilenet_v3_small --nodes     the fx nodes and their sizes (for `cuts`)
"""

from __future__ import annotations

from pathlib import Path


def _resolve(arch: str, config: str | None) -> str:
    """The buildable arch name: a paper arch, a config arch (registered) or a source (registered as itself)."""
    from ..core import splitting
    from ..grid import validate
    from ..grid.vocabulary import ARCHS

    if config:
        cfg = validate.load(config, roots=False)
        splitting.register_config_archs(cfg, str(Path(config).resolve().parent))
        if arch in (cfg.get("archs") or {}) or arch in ARCHS:
            return arch
        raise ValueError(f"arch {arch!r} is neither a paper arch nor in {config}'s archs ({', '.join(cfg['archs'])})")
    if arch in ARCHS:
        return arch
    if ":" not in arch:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}, torchvision:NAME, timm:NAME, "
                         "package.module:function, or a config arch with --config FILE")
    splitting.register_source(splitting.ArchSource(arch, arch, path=str(Path.cwd())))
    return arch


def print_nodes(arch: str, image_size: int, num_classes: int) -> None:
    from ..core import splitting

    source = splitting.source_of(arch)
    net = splitting.build_plain(source.source, num_classes, source.path)
    for n in splitting.describe_nodes(net, image_size):
        if n.op not in ("placeholder", "output", "get_attr"):
            print(f"{n.name:40s} {n.op:14s} {'x'.join(map(str, n.shape[1:])) if n.shape else '-'}")


def layers_command(args) -> int:
    from ..core.models import build_model, layers, parameter_count
    arch = _resolve(args.arch, args.config)
    if args.nodes:
        print_nodes(arch, args.image_size, args.num_classes)
        return 0
    model = build_model(arch, args.num_classes, args.image_size, width=args.width)
    rows = [("index", "module", "advlayers name", "torchvision name", "BatchNorm", "params")]
    for layer in layers(model):
        bn = layer.names[1] if len(layer.names) > 1 else "-"
        rows.append((str(layer.index), layer.module, layer.name, layer.torchvision_name or "-", bn,
                     f"{parameter_count(model, list(layer.names)):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) if i in (0, 5) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    counts = [sum(layer.module == m for layer in layers(model)) for m in model.module_names]
    print(f"{len(rows) - 1} layers, {parameter_count(model):,} parameters ({args.arch}, width {args.width:g}, "
          f"{args.num_classes} classes); {len(counts)} modules, layers per module m0..m{len(counts) - 1}: "
          f"module_layers: {counts}")
    return 0
