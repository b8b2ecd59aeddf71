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


def test_github_workflow_is_valid_and_runs_the_readme_test_command():
    import shutil
    import subprocess
    import sys

    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    cmd = [exe, "--builtin-schema", "vendor.github-workflows", str(workflow)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = yaml.safe_load(workflow.read_text())["jobs"]["test"]["steps"]
    assert "python3 tools/tasks.py test" in [s.get("run") for s in steps]
    assert "python3 tools/tasks.py test" in (ROOT / "README.md").read_text()
    assert "tools/tasks.py test" in (ROOT / ".ci" / "run").read_text()


def test_pre_commit_checks_formatting_and_the_notebook_pairs():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff", "ruff-format", "jupytext", "check-github-workflows"} <= set(hooks)
    assert "--sync" in hooks["jupytext"]["args"]


def test_the_pharmacometrics_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    modules = "regimens model population sampling nonmem pkfit classical nlme popmodels"
    modules += " warfarin vpc metrics files reproducibility features datasets"
    code = "; ".join(f"import pkpd_lib.{m}" for m in modules.split())
    code += "; import sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
