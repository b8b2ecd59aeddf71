"""The conda environment installs the package with its extras, so pyproject.toml is the
one list of dependencies."""

import re
import tomllib
from pathlib import Path

import pytest
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


PACKAGE = ROOT / "pkpd_lib"
#: Each floor and what it may import from the package: pmx the root modules only, nets
#: pmx too, study everything; the root modules nothing.
FLOORS = {
    "pmx": {"files", "memo", "reproducibility", "pmx"},
    "nets": {"files", "memo", "reproducibility", "pmx", "nets"},
    "study": {"files", "memo", "reproducibility", "pmx", "nets", "study"},
}
ROOT_MODULES = ("files", "memo", "reproducibility")


def _package_imports(path: Path, root: Path = ROOT) -> set[str]:
    """The ``pkpd_lib`` modules a file imports (anywhere in it, functions included),
    relative imports resolved, as dotted names below ``pkpd_lib``."""
    import ast

    here = path.relative_to(root).with_suffix("").parts[:-1]  # its package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(here[: len(here) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.removeprefix("pkpd_lib.") for n in names if n.startswith("pkpd_lib.")}
    return found


def test_pyproject_lists_every_subpackage():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(config["packages"]) == on_disk == {"pkpd_lib", *(f"pkpd_lib.{f}" for f in FLOORS)}


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_imports_only_from_the_floors_below(floor):
    files = sorted((PACKAGE / floor).glob("*.py"))
    assert len(files) > 2
    for path in files:
        for name in _package_imports(path):
            assert name.split(".")[0] in FLOORS[floor], f"{path.name} imports pkpd_lib.{name}"


def test_the_root_modules_import_nothing_from_the_package():
    for name in ROOT_MODULES:
        assert _package_imports(PACKAGE / f"{name}.py") == set(), name


def test_the_import_scan_sees_relative_and_absolute_imports(tmp_path):
    probe = tmp_path / "pkpd_lib" / "pmx" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import numpy\nfrom ..nets import networks\nfrom . import pk\n"
        "def f():\n    import pkpd_lib.study.plots\n"
    )
    assert _package_imports(probe, tmp_path) == {"nets", "pmx.pk", "study.plots"}


def test_the_pharmacometrics_modules_do_not_import_tensorflow():
    """Every module of pmx, and the TensorFlow-free modules above it (the network
    inputs, the study's data sets, scores and classical fits), imports without
    TensorFlow or Keras."""
    import subprocess
    import sys

    modules = [f"pmx.{p.stem}" for p in sorted((PACKAGE / "pmx").glob("*.py"))]
    modules += ["files", "reproducibility", "nets.features", "study.datasets"]
    modules += ["study.metrics", "study.classical"]
    code = "; ".join(f"import pkpd_lib.{m}" for m in modules)
    code += "; import sys; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


#: The layers whose public functions and methods must document their arguments in a
#: numpydoc ``Parameters`` section (add "nets" once its docstrings have one).
DOCUMENTED_LAYERS = ("pmx", "nets")
_PARAMETERS_SECTION = re.compile(r"^\s*Parameters\n\s*-{10}\s*$", re.MULTILINE)


def _undocumented_parameters(path: Path) -> list[str]:
    """The public functions of a module file, and the public methods of its public
    classes, that take arguments but whose docstring has no ``Parameters`` section
    (dunder methods and properties aside), as ``name`` or ``Class.name``."""
    import ast

    def takes_arguments(node, method: bool) -> bool:
        a = node.args
        names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
        static = any(getattr(d, "id", None) == "staticmethod" for d in node.decorator_list)
        if method and not static:
            names = names[1:]  # self or cls
        return bool(names or a.vararg or a.kwarg)

    def is_property(node) -> bool:
        return any(
            getattr(d, "id", None) in ("property", "cached_property")
            or getattr(d, "attr", None) in ("setter", "getter", "deleter", "cached_property")
            for d in node.decorator_list
        )

    found = []

    def check(body, prefix: str, method: bool) -> None:
        for node in body:
            if node.name.startswith("_"):
                continue
            if isinstance(node, ast.ClassDef):
                check([n for n in node.body if hasattr(n, "name")], f"{node.name}.", True)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if is_property(node) or not takes_arguments(node, method):
                    continue
                if not _PARAMETERS_SECTION.search(ast.get_docstring(node) or ""):
                    found.append(f"{prefix}{node.name}")

    tree = ast.parse(path.read_text())
    check([n for n in tree.body if hasattr(n, "name")], "", False)
    return found


@pytest.mark.parametrize("layer", DOCUMENTED_LAYERS)
def test_public_functions_document_their_parameters(layer):
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert len(files) > 2
    missing = {p.name: found for p in files if (found := _undocumented_parameters(p))}
    assert missing == {}, f"no numpydoc Parameters section: {missing}"


def test_the_parameters_scan_sees_functions_methods_and_skips_the_rest(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'def f(x):\n    """No section."""\n'
        'def g(x):\n    """Doc.\n\n    Parameters\n    ----------\n'
        '    x : int\n        X.\n    """\n'
        "def h():\n    pass\n"
        "def v(*args):\n    pass\n"
        "def _private(x):\n    pass\n"
        "class C:\n"
        "    def __init__(self, x):\n        pass\n"
        "    @property\n    def p(self):\n        pass\n"
        "    def m(self, y):\n        pass\n"
        "    def n(self):\n        pass\n"
        "    @staticmethod\n    def s(z):\n        pass\n"
        "    @classmethod\n    def k(cls):\n        pass\n"
        "class _Hidden:\n    def m(self, y):\n        pass\n"
    )
    assert _undocumented_parameters(probe) == ["f", "v", "C.m", "C.s"]
