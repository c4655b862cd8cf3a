"""What tells people the client's API (issue 15): the README's table of ``/tensor/ops``
parameters and the typed step builder ``torchlab_client.ops``, both generated from the
service's OpenAPI document and kept up to date here; the typed usage example that ``make
lint`` type-checks, run here; and the package found by mypy in an editable install."""

from __future__ import annotations

import importlib.util
import inspect
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torchlab_client as tl
from fastapi import FastAPI
from torchlab_client import ops

from tests.clients.conftest import CLIENT_SOURCE, ROOT, run_async
from tests.clients.test_live import _OFFLINE
from tests.clients.typed_usage import async_usage, usage

SCRIPT = CLIENT_SOURCE / "scripts" / "tensor_ops_reference.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tensor_ops_reference", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_and_the_step_builder_are_up_to_date() -> None:
    for path, text in load_script().expected().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python {SCRIPT.relative_to(ROOT)}"
        )


def test_the_readme_lists_every_op_with_its_parameters() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- generated:tensor-ops -->")[1].split("<!-- end:tensor-ops -->")[0]
    for op in ops.OPS:
        assert f"| `{op}` |" in section
    assert "| `matmul` | `torch.matmul(x, y)`" in section
    assert "`dim0` int = `0`, `dim1` int = `1`" in section


def test_every_op_has_its_builder_with_the_services_parameters() -> None:
    for op in ops.OPS:
        builder = getattr(ops, op)
        parameters = list(inspect.signature(builder).parameters)
        assert tuple(parameters) == ops.PARAMETERS[op], op
    assert ops.matmul("a", "b", out="c") == {"op": "matmul", "x": "a", "y": "b", "out": "c"}
    assert ops.transpose("t") == {"op": "transpose", "x": "t"}
    with pytest.raises(TypeError):
        ops.matmul("a", "b", outt="c")  # type: ignore[call-arg]


def test_built_steps_run(sync_client: tl.Client) -> None:
    a = np.arange(6.0).reshape(2, 3)
    out = sync_client.tensor_ops(
        [
            ops.t("a", out="at"),
            ops.matmul("a", "at", out="g"),
            ops.transpose("a", dim0=0, dim1=1, out="b"),
            ops.sum("g", dim=[0, 1], out="s"),
            ops.norm("a", p="fro", out="n"),
            ops.to("g", "float16", out="h"),
        ],
        {"a": a},
        ["g", "b", "s", "n", "h"],
    )
    np.testing.assert_allclose(out["g"], a @ a.T)
    np.testing.assert_array_equal(out["b"], a.T)
    assert float(out["s"]) == pytest.approx((a @ a.T).sum())
    assert float(out["n"]) == pytest.approx(np.linalg.norm(a))
    assert out["h"].dtype == np.float16


def test_the_typed_usage_example_runs(sync_client: tl.Client, app: FastAPI) -> None:
    usage(sync_client)
    run_async(app, async_usage)


@pytest.mark.slow
def test_mypy_finds_an_editable_install(tmp_path: Path) -> None:
    """``pip install -e ./clients/python`` into a fresh environment, then mypy (this
    environment's, reading that one's packages) over a typed program outside the tree."""
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    source = shutil.copytree(
        CLIENT_SOURCE,
        tmp_path / "torchlab-client",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    install = subprocess.run(
        [*(str(python), "-m", "pip", "install", "--quiet"), "-e", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if _OFFLINE.search(output):
            pytest.skip(f"the package index cannot be reached:\n{output}")
        pytest.fail(f"pip install -e failed:\n{output}")
    program = tmp_path / "program.py"
    program.write_text(
        "import torchlab_client as tl\n"
        "from typing import assert_type\n"
        "client = tl.Client('http://127.0.0.1:1')\n"
        "assert_type(client.health(), tl.Health)\n"
        "client.grad('sum(x)', inputs={'x': [1.0]}, hesian=True)  # type: ignore[arg-type]\n"
    )
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert mypy is not None
    run = subprocess.run(
        [mypy, "--strict", "--no-incremental", "--python-executable", str(python), str(program)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
