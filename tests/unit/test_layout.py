"""The shape of the code, kept: thin handlers, small modules, imports that go one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
ROUTES = sorted((SERVICE / "api" / "routes").glob("*.py"))
MAX_MODULE_LINES = 550  # "about 500": a module of one job may run a little over
MAX_HANDLER_LINES = 40


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", ROUTES, ids=lambda p: p.stem)
def test_no_route_module_imports_another(path: Path) -> None:
    assert not {m for m in _imports(path) if m.startswith("service.api.routes")}


@pytest.mark.parametrize("path", ROUTES, ids=lambda p: p.stem)
def test_handlers_are_short(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring: the OpenAPI description
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0  # type: ignore[operator]
            assert lines <= MAX_HANDLER_LINES, f"{path.stem}.{node.name}: {lines} lines"


def test_ops_do_not_import_the_http_layer() -> None:
    for path in (SERVICE / "ops").rglob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("service.api", "fastapi"))}, path


def test_schemas_do_not_import_torch_or_the_service() -> None:
    for path in (ROOT / "schemas").rglob("*.py"):
        assert not {m for m in _imports(path) if m.startswith(("torch", "service"))}, path


@pytest.mark.parametrize(
    "path", sorted(SERVICE.rglob("*.py")), ids=lambda p: str(p.relative_to(SERVICE))
)
def test_modules_are_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def test_importing_the_app_does_not_probe_cuda() -> None:
    # Every CUDA query raises in this interpreter: importing the app must ask none.
    code = (
        "import torch\n"
        "def probe(*args, **kwargs):\n"
        "    raise AssertionError('CUDA probed at import')\n"
        "torch.cuda.is_available = probe\n"
        "torch.cuda.device_count = probe\n"
        "import service.main\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
