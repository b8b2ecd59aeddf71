"""The conda environment installs the package with its extras, so pyproject.toml is the
one list of dependencies."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_installs_the_package_with_every_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d for dep in env["dependencies"] if isinstance(dep, dict) for d in dep["pip"]]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert pip == [f"-e .[{','.join(sorted(project['optional-dependencies']))}]"]
    assert conda == [f"python{project['requires-python']}", "pip"]
