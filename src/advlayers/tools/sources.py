"""Which library files a workflow script runs: what its rule lists as inputs, so that an edit to a library file
reruns exactly the jobs that import it (Snakemake itself does not see library changes).

Read from the source (every `import advlayers...` and `from advlayers... import` / relative import, transitively,
with the `__init__.py` of every package on the way), so the list cannot drift from the code. Standard library only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "advlayers"


def _module_file(src: Path, dotted: str) -> Path | None:
    """The file of an advlayers module or package (None if `dotted` is not one, e.g. a name inside a module)."""
    base = src.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(src: Path, path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package's __init__) of a file under `src`."""
    rel = path.relative_to(src).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts), rel.name == "__init__"


def imported_modules(src: Path, path: Path, module: str = "", is_package: bool = False) -> set[str]:
    """The advlayers modules (dotted names) one file imports directly, wherever in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from advlayers.grid import plan`
    return {m for m in found if _module_file(src, m) is not None}


def library_files(src: str | Path, script: str | Path, relative_to: str | Path | None = None, *,
                  without: tuple[str, ...] = ()) -> list[str]:
    """Every library file `script` runs (sorted): its advlayers imports, theirs, and their packages' __init__.py.

    `without`: modules (dotted names) not followed: neither they nor what only they import are listed (for code a
    job runs only under a setting; `module_files` gives such a module's own list to add where the setting is on).
    """
    src = Path(src)
    return _closure(src, sorted(imported_modules(src, Path(script))), set(without), relative_to)


def module_files(src: str | Path, module: str, relative_to: str | Path | None = None) -> list[str]:
    """Every library file importing the advlayers module `module` (dotted) runs: itself, its imports, theirs, ..."""
    src = Path(src)
    if _module_file(src, module) is None:
        raise ValueError(f"{module!r} is not a module under {src}")
    return _closure(src, [module], set(), relative_to)


def _closure(src: Path, todo: list[str], without: set[str], relative_to) -> list[str]:
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in without:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages it is inside
        path = _module_file(src, name)
        todo += sorted(imported_modules(src, path, *_module_name(src, path)))
    files = sorted(_module_file(src, m) for m in seen)
    base = Path(relative_to) if relative_to is not None else None
    return [str(f.relative_to(base)) if base is not None else str(f) for f in files]


# The files a run of the workflow needs (a copy of them runs it elsewhere: tests, benchmarks).
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "src", "profiles", "slurm")


def copy_workflow(repo: str | Path, dst: str | Path) -> Path:
    """The workflow's files of the checkout `repo` (not tests, results or caches) copied to `dst`."""
    import shutil

    repo, dst = Path(repo), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    return dst
