"""The conda environment of the workflow's jobs agrees with pyproject.toml and constraints.txt.

No conda is needed: the files are parsed and compared. Every runtime dependency and every dependency of the
`workflow` extra (except the ones that run only in the submitting environment) is in the env with the same
version bounds; torch and torchvision carry exactly the pins of constraints.txt; nothing installs the package
itself (jobs import the checkout's src/); every rule's `conda:` path leads to the file.
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENV = REPO / "workflow" / "envs" / "advlayers.yaml"
HOST_ONLY = {"snakemake-executor-plugin-slurm"}  # runs in the environment that submits the jobs, not in jobs
PINNED = ("torch", "torchvision", "pyautoattack", "seaborn")  # seaborn: the figures as tested
FLOORS = ("requests", "urllib3", "idna")  # constraints.txt's lower bounds: network libraries without old advisories
FORMATTER = ("snakefmt", "black")  # pinned: the rule files' formatting (CI checks it) must not change by itself
OPTIONAL = ("timm",)  # pinned optional extras (pyproject [project.optional-dependencies], not in the jobs' env)


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements(lines) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    out = {canonicalize_name(r.name): r for r in reqs}
    assert len(out) == len(reqs), f"a package is listed twice: {[r.name for r in reqs]}"
    return out


def constraints() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    return requirements([line for line in lines if line])


def env():
    data = yaml.safe_load(ENV.read_text())
    conda = [d for d in data["dependencies"] if isinstance(d, str)]
    pip = [d for d in data["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1 and set(pip[0]) == {"pip"}, "expected one pip: section"
    return data, conda, pip[0]["pip"]


def test_env_lists_every_dependency_with_the_pyproject_bounds():
    project = pyproject()["project"]
    wanted = requirements(project["dependencies"])
    workflow = requirements(project["optional-dependencies"]["workflow"])
    wanted.update({k: v for k, v in workflow.items() if k not in HOST_ONLY})
    _, _, pip = env()
    assert not [line for line in pip if line.startswith("-")], "no -e/-r lines: jobs import the checkout's src/"
    have = requirements(pip)
    assert sorted(set(wanted) - set(have)) == [], "in pyproject.toml but not in the env"
    assert sorted(set(have) - set(wanted)) == [], "in the env but not in pyproject.toml"
    pins = constraints()
    for name, req in wanted.items():
        spec = have[name].specifier
        if name in PINNED:
            assert spec == pins[name].specifier, f"{name}: env {spec}, constraints.txt {pins[name].specifier}"
            (pin,) = spec
            assert pin.operator == "==" and req.specifier.contains(pin.version), \
                f"{name} pin {pin} outside pyproject's {req.specifier}"
        else:
            assert spec == req.specifier, f"{name}: env {spec or 'unbounded'}, pyproject {req.specifier or 'unbounded'}"


def test_constraints_pin_torch_torchvision_pyautoattack_and_floor_the_network_libraries():
    pins = constraints()
    assert set(pins) == {*PINNED, *FLOORS, *FORMATTER, *OPTIONAL}
    extras = pyproject()["project"]["optional-dependencies"]
    for name in OPTIONAL:  # an extra of its own name, whose bounds admit the pin; CI installs it
        (pin,) = pins[name].specifier
        assert pin.operator == "==" and requirements(extras[name])[name].specifier.contains(pin.version), name
        assert re.search(rf'-e "\.\[[a-z,]*\b{name}\b[a-z,]*\]"', (REPO / ".ci" / "run").read_text()), name
    assert all(len(pins[n].specifier) == 1 and next(iter(pins[n].specifier)).operator == "==" for n in PINNED)
    assert all(len(pins[n].specifier) == 1 and next(iter(pins[n].specifier)).operator == "==" for n in FORMATTER)
    test_extra = requirements(pyproject()["project"]["optional-dependencies"]["test"])
    (pin,) = pins["snakefmt"].specifier
    assert test_extra["snakefmt"].specifier.contains(pin.version), "the test extra installs the pinned snakefmt"
    assert all(len(pins[n].specifier) == 1 and next(iter(pins[n].specifier)).operator == ">=" for n in FLOORS)
    # at least the releases the issue asked for: requests 2.32, urllib3 2, idna 3.7
    for name, oldest in (("requests", "2.32"), ("urllib3", "2"), ("idna", "3.7")):
        assert Version(next(iter(pins[name].specifier)).version) >= Version(oldest), name


def _requirements_of(dist: str) -> list[Requirement]:
    from importlib import metadata

    out = []
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def test_installed_network_libraries_are_current_and_nothing_we_install_holds_them_back():
    """requests/urllib3/idna as installed (importlib.metadata) satisfy constraints.txt's floors, and no package
    in advlayers' dependency tree (runtime and `workflow` extra) caps them below (torchattacks' requests~=2.25.1
    did)."""
    from importlib import metadata

    pins = constraints()
    for name in FLOORS:
        installed = Version(metadata.version(name))
        assert pins[name].specifier.contains(installed), f"{name} {installed} is older than {pins[name].specifier}"
    project = pyproject()["project"]
    todo = [Requirement(r).name for r in [*project["dependencies"], *project["optional-dependencies"]["workflow"]]]
    seen, capped = set(), []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = _requirements_of(name)
        except metadata.PackageNotFoundError:
            continue
        for req in reqs:
            if canonicalize_name(req.name) in FLOORS:
                installed = metadata.version(req.name)
                if not req.specifier.contains(installed, prereleases=True):
                    capped.append(f"{name} requires {req}, installed {installed}")
            todo.append(req.name)
    assert {"snakemake", "pyautoattack", "requests"} <= seen and not capped, capped


def test_env_python_and_channels():
    data, conda, _ = env()
    assert data["channels"] == ["conda-forge", "nodefaults"]
    python = [d for d in conda if re.match(r"python\b", d)]
    assert len(python) == 1 and "pip" in conda
    version = python[0].split("=", 1)[1]
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(Version(version))


def test_every_rule_uses_this_env():
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    paths = [(rule, m.group(1)) for rule in rules
             for m in re.finditer(r"conda:\s*\n\s*[\"']([^\"']+)[\"']", rule.read_text())]
    assert paths, "no conda: directive found"
    for rule, path in paths:
        assert (rule.parent / path).resolve() == ENV, f"{rule.name}: conda: {path}"
    assert not (REPO / "envs").exists(), "the old top-level envs/ folder is back"


def test_citation_and_license_agree_with_the_package():
    from advlayers import __version__

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "version", "license", "preferred-citation"):
        assert key in cff, key
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == __version__ == pyproject()["project"]["version"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Identifying Layers Susceptible to Adversarial Attacks" and paper["year"] == 2021
    assert [a["family-names"] for a in paper["authors"]] == ["Siddiqui", "Breuel"]
    assert "2107.04827" in paper["url"]
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "2026 advlayers contributors" in license_text


def test_rule_files_are_snakefmt_clean():
    """`snakefmt --check Snakefile workflow/` (as .ci/run) with the project's settings ([tool.snakefmt]: line length
    120, directives in their written order): nothing to reformat, nothing it cannot parse."""
    import subprocess
    import sys

    pytest.importorskip("snakefmt")
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--check Snakefile workflow/" in (REPO / ".ci" / "run").read_text()
