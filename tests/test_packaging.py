"""The conda environment and pyproject.toml declare the same packages and versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _split(spec: str) -> tuple[str, str]:
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0)
    return name.lower().replace("_", "-"), spec[len(name) :].replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    pyproject = dict(_split(s) for s in declared)

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda += [d for d in dep["pip"] if not d.startswith("-e")]
        elif not dep.startswith(("python", "pip")):
            conda.append(dep)
    environment = dict(_split(s) for s in conda)
    assert environment == pyproject
