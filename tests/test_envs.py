"""The conda environments of the rules (envs/*.yaml): used, pinned to requirements.lock, and complete.

Conda cannot run here, so these checks stand in for creating the environments: every rule with a script names
an environment that exists, every pin is exact and equal to the virtual environment's lock, and each
environment holds every dependency of nb360 that its rules' scripts import.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, lock_pins

RULE = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.M | re.S)
DIRECTIVE = re.compile(r'^    (conda|script):\n\s+"([^"]+)"', re.M)
# conda-forge names of packages that PyPI calls otherwise
CONDA_TO_PYPI = {"pysoundfile": "soundfile", "pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _rules() -> dict[str, dict[str, str]]:
    """rule name -> {"conda": env file, "script": script file}, paths relative to the repository."""
    rules = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for name, body in RULE.findall(smk.read_text()):
            rules[name] = {
                key: str((smk.parent / path).resolve().relative_to(REPO))
                for key, path in DIRECTIVE.findall(body)
            }
    return rules


def _env_pins(env: Path) -> dict[str, str]:
    """Package -> pinned version ("" when unpinned) of a conda environment file, under PyPI names."""
    pins = {}
    for dep in yaml.safe_load(env.read_text())["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            if spec.startswith("-"):  # pip options such as --index-url
                continue
            name, _, version = re.split(r"(==|=)", spec, maxsplit=1) if "=" in spec else (spec, "", "")
            name = _norm(name)
            if name not in NOT_PACKAGES:
                pins[CONDA_TO_PYPI.get(name, name)] = version
    return pins


def _nb360_dependencies() -> set[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!\[; ]", d, maxsplit=1)[0]) for d in deps}


_DISTRIBUTIONS_IMPORTED = """
import importlib, json, sys
from importlib.metadata import packages_distributions
for module in sys.argv[1:]:
    importlib.import_module(module)
dists = packages_distributions()
print(json.dumps(sorted({d for m in list(sys.modules) for d in dists.get(m.split(".")[0], [])})))
"""


def _imports(script: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names - {"_repo_path"}


RULES = _rules()
SCRIPT_RULES = {name: r for name, r in RULES.items() if "script" in r}
ENVS = sorted({r["conda"] for r in SCRIPT_RULES.values() if "conda" in r})


def test_every_rule_with_a_script_names_an_existing_environment():
    assert len(SCRIPT_RULES) >= 10  # the parser found the rules
    for name, rule in SCRIPT_RULES.items():
        assert "conda" in rule, f"rule {name} has no conda: directive"
        assert (REPO / rule["conda"]).is_file(), f"rule {name}: {rule['conda']} does not exist"


def test_every_environment_file_is_used_by_a_rule():
    assert {str(p.relative_to(REPO)) for p in (REPO / "envs").glob("*.yaml")} == set(ENVS)


@pytest.mark.parametrize("env", ENVS)
def test_environment_pins_are_exact_and_those_of_the_lock(env):
    lock = lock_pins()
    for package, version in _env_pins(REPO / env).items():
        assert version, f"{env}: {package} is not pinned to a version"
        assert package in lock, f"{env}: {package} is not in requirements.lock"
        assert version == lock[package], f"{env}: {package}={version}, requirements.lock has {lock[package]}"


@pytest.mark.parametrize("env", ENVS)
def test_environment_holds_what_its_scripts_import(env):
    """The nb360 dependencies that the scripts of the env's rules import, measured by importing them."""
    scripts = sorted({r["script"] for r in SCRIPT_RULES.values() if r.get("conda") == env})
    modules = sorted(set().union(*(_imports(REPO / s) for s in scripts)))
    proc = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTIONS_IMPORTED, *modules],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    needed = {_norm(d) for d in json.loads(proc.stdout)} & _nb360_dependencies()
    needed -= {"snakemake"}  # Snakemake puts its own package on the scripts' path
    assert needed, "no dependency found: the import measurement is broken"
    missing = needed - set(_env_pins(REPO / env))
    assert not missing, f"{env} lacks {sorted(missing)}, imported by {', '.join(scripts)}"
