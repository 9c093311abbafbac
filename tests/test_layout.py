"""The package layout's rules: import-linter contracts, no cycles, fast imports, one name per thing.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``lint-imports`` checks
the same ones from the command line.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ecoclassify

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ecoclassify"


def test_every_import_linter_contract_in_pyproject_is_kept(tmp_path):
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(REPO / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
    for rule in ("No import cycles", "Layers follow the data flow", "click is imported only under cli/",
                 "prediction never imports training", "never import TensorFlow or Keras"):
        assert rule in result.stdout, rule


def _imports_of(path: Path, module: str) -> set[str]:
    """Every ecoclassify module that ``module`` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level] if not path.name == "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "ecoclassify" or name.startswith("ecoclassify.")}


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return {name: {m for m in _imports_of(path, name) if m in modules and m != name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other_even_through_others():
    graph = _module_graph()
    # A package's __init__ importing its own modules (which import siblings) is not a cycle of
    # modules; leave __init__ edges to its children out.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["ecoclassify", "ecoclassify.cli", "ecoclassify.config", "ecoclassify.errors",
                                    "ecoclassify.files", "ecoclassify.config.backbones", "ecoclassify.models.registry"])
def test_importing_the_fast_path_modules_does_not_import_tensorflow(module):
    code = (f"import sys, {module}; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')); "
            "assert not bad, bad[:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_module_is_named_like_a_public_name_of_its_package_that_it_does_not_define():
    # `import ecoclassify.benchmark` once replaced the function ecoclassify.benchmark with a module.
    clashes = []
    for package in [ecoclassify] + [importlib.import_module(f"ecoclassify.{m.name}")
                                    for m in pkgutil.iter_modules(ecoclassify.__path__) if m.ispkg]:
        public = set(getattr(package, "__all__", []))
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in public:
                clashes.append(f"{package.__name__}.{info.name}")
    assert clashes == []


def test_every_public_name_of_the_package_resolves():
    for name in ecoclassify.__all__:
        assert getattr(ecoclassify, name) is not None, name


RUN_FILE_NAMES = ("config.yaml", "labels.json", "splits.csv", "excluded.csv", "model.keras", "history.csv",
                  "metrics.json", "state.json", "per_class.csv", "thresholds.csv", "per_group.csv",
                  "predictions_test.csv", "predictions.csv", "report.html", "report.md", "labels.txt",
                  "model.tflite", "confusion_matrix.csv")


def test_each_run_folder_file_name_is_defined_once_in_files_py():
    from ecoclassify import files

    defined = {value for name, value in vars(files).items() if name.isupper() and isinstance(value, str)}
    assert set(RUN_FILE_NAMES) <= defined
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in RUN_FILE_NAMES:
                elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert elsewhere == []


def test_no_module_is_much_longer_than_400_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 460}
    assert long == {}
