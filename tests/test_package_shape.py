"""The package's shape, checked so that it holds as the code grows: short functions, one-way imports, a
command line that answers before torch loads, and a code snapshot (what Azure ML uploads for every job) that
holds what the components run and none of the local-only tools."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "train_pytorch_model"
MAX_FUNCTION_LINES = 80
LOCAL_ONLY = "train_pytorch_model.local"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported_modules(name: str, path: Path, known: dict[str, Path], top_level_only: bool) -> set[str]:
    """The package's modules that a module imports (only at its top level, or anywhere in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(candidate for candidate in candidates if candidate in known and candidate != name)
    return found


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_module_imports_form_no_cycle():
    known = modules()
    graph = {name: imported_modules(name, path, known, top_level_only=True) for name, path in known.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", f"import cycle: {' -> '.join([*trail, name, other])}"
            if other not in state:
                visit(other, [*trail, name])
        state[name] = "done"

    for name in known:
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize(
    "entry",
    ["train_pytorch_model.train", "train_pytorch_model.settings", "train_pytorch_model.model.families"],
)
def test_the_command_line_checks_values_before_torch_loads(entry):
    """A mistake in a parameter is reported in a moment, not after seconds of importing torch and MLflow."""
    probe = f"import sys, {entry}; print(sorted(m for m in ('torch', 'mlflow', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_snapshot_azure_ml_uploads_holds_the_components_and_no_local_tool():
    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    component = yaml.safe_load((REPO_ROOT / "component.yaml").read_text(encoding="utf-8"))
    code = (REPO_ROOT / component["code"]).resolve()
    uploaded = {
        Path(relative).as_posix()
        for _, relative in get_upload_files_from_folder(code, prefix="", ignore_file=get_ignore_file(code))
    }
    known = modules()
    local_modules = {name for name in known if name.startswith(LOCAL_ONLY)}
    expected = {path.relative_to(code).as_posix() for name, path in known.items() if name not in local_modules}
    local = {path.relative_to(code).as_posix() for name, path in known.items() if name in local_modules}
    assert expected <= uploaded, sorted(expected - uploaded)
    assert not local & uploaded, sorted(local & uploaded)
    assert not [name for name in uploaded if "__pycache__" in name or ".egg-info" in name]
    # Nothing that runs on Azure ML may need what the snapshot leaves out.
    needs_local = {
        name: sorted(imported_modules(name, path, known, top_level_only=False) & local_modules)
        for name, path in known.items()
        if name not in local_modules
    }
    assert not {name: deps for name, deps in needs_local.items() if deps}
