"""The package's layout keeps the design visible: layers that import only downwards, no import cycle, units of a
readable size, every artifact path written in one module, and the library files each rule lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from advlayers.tools.sources import imported_modules, library_files, module_files

from helpers import REPO

SRC = REPO / "src"
PACKAGE = SRC / "advlayers"
# Bottom to top: a module imports only from its own layer or below (the package's docstring lists them).
LAYERS = {"foundation": 0, "grid": 1, "core": 2, "analyses": 3, "report": 3, "jobs": 4, "tools": 5}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_CLASS_LINES = 400, 60, 150


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "advlayers.__main__":
        return "tools"  # `python -m advlayers`: the command line
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "foundation"


def imports() -> dict[str, set[str]]:
    found = {}
    for name, path in modules().items():
        found[name] = {m for m in imported_modules(SRC, path, name, path.name == "__init__.py")
                       if m in modules() and m != name}
    return found


def test_every_subpackage_is_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS) - {"foundation"}


def test_layers_import_only_downwards():
    upward = [(m, other) for m, found in imports().items() for other in found
              if other != "advlayers" and LAYERS[layer(other)] > LAYERS[layer(m)]]
    assert not upward, upward


def test_no_import_cycle():
    graph = imports()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def _units(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_units_are_of_readable_size(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    for node, lines in _units(ast.parse(text)):
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        assert lines <= limit, f"{path.name}: {node.name} has {lines} lines (at most {limit})"


def _string_constants(path: Path) -> list[str]:
    """String literals of a Python file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


def test_artifact_paths_are_written_in_the_layout_module_only():
    """Rules, scripts, verify, preflight and cost build paths through `grid.layout`: no other string literal of
    the library or the workflow starts a path under results/ or logs/."""
    layout_file = PACKAGE / "grid" / "layout.py"
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "workflow").rglob("*.py")]:
        if path != layout_file:
            offenders += [(path.name, s) for s in _string_constants(path) if re.match(r"(results|logs)/", s)]
    for path in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        offenders += [(path.name, m) for m in re.findall(r"""["'](?:results|logs)/[^"']*["']""", path.read_text())]
    assert not offenders, offenders


def test_each_rule_lists_the_library_files_its_script_imports():
    """The rerun mechanism's input: packages' __init__ files and modules imported through a package count."""
    files = {Path(f).relative_to(SRC).as_posix() for f in library_files(SRC, REPO / "workflow/scripts/retrain.py")}
    assert {"advlayers/__init__.py", "advlayers/jobs/__init__.py", "advlayers/jobs/retrain.py",
            "advlayers/core/__init__.py", "advlayers/core/training.py", "advlayers/core/attacks.py",
            "advlayers/grid/layout.py", "advlayers/io.py"} <= files
    assert not {f for f in files if f.startswith(("advlayers/report/", "advlayers/tools/"))}
    figure = {Path(f).relative_to(SRC).as_posix() for f in library_files(SRC, REPO / "workflow/scripts/figure.py")}
    assert not {f for f in figure if f.startswith(("advlayers/core/", "advlayers/jobs/"))}, figure


def test_a_module_left_out_is_not_followed():
    """Training rules leave out the per-epoch held-out evaluation unless eval_each_epoch is on (common.smk)."""
    script = REPO / "workflow/scripts/retrain.py"
    full = set(library_files(SRC, script, relative_to=SRC))
    without = set(library_files(SRC, script, relative_to=SRC, without=("advlayers.core.epoch_eval",)))
    held_out = set(module_files(SRC, "advlayers.core.epoch_eval", relative_to=SRC))
    assert {"advlayers/core/epoch_eval.py", "advlayers/core/evaluation.py"} <= full - without
    assert {"advlayers/core/training.py", "advlayers/core/attacks.py"} <= without  # still reached otherwise
    assert full == without | held_out
    with pytest.raises(ValueError, match="not a module"):
        module_files(SRC, "advlayers.core.no_such_module")


def test_public_api_is_importable_from_the_package():
    import advlayers

    for name in ("build_model", "split_modules", "load_dataset", "get_recipe", "pretrain", "retrain", "pgd",
                 "evaluate", "AttackSpec", "load_checkpoint", "check_claims"):
        assert callable(getattr(advlayers, name)), name
