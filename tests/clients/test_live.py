"""The client as users get it, against ``uvicorn service.main:app`` on loopback:

- installed with pip into a fresh virtual environment without torch or Pillow, imported and
  used (numpy in and out, errors, pictures as bytes);
- ``examples/tutorial.py`` run end to end, its figures checked to be valid PNGs. Chapters
  whose routes the service lacks are skipped by the tutorial itself (``--skip-missing``) and
  their figures are not expected; once every route exists the run must be complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from PIL import Image

from tests.clients.conftest import CLIENT_SOURCE, ROOT, ROUTES

pytestmark = pytest.mark.slow

NO_TORCH_SCRIPT = r"""
import importlib.util
import sys

import numpy as np

assert importlib.util.find_spec("torch") is None, "this environment must not have torch"
assert importlib.util.find_spec("PIL") is None, "this environment must not have Pillow"

import torchlab_client as tl

base_url = sys.argv[1]
with tl.Client(base_url, b64_threshold=64) as client:
    assert client.health().ok
    info = client.info()
    print("service", info.version, "torch", info.torch_version, "on", info.default_device)

    small = np.arange(6, dtype=np.int32).reshape(2, 3)
    large = np.linspace(-1, 1, 100)
    large[[0, 1, 2]] = [np.nan, np.inf, -np.inf]
    out = client.tensor_ops(
        [{"op": "clone", "x": "s", "out": "s"}, {"op": "clone", "x": "l", "out": "l"}],
        {"s": small, "l": large},
        ["s", "l"],
    )
    assert out["s"].dtype == np.int32 and (out["s"] == small).all()
    assert out["l"].dtype == np.float64
    np.testing.assert_array_equal(out["l"], large)

    value, grads = client.grad("sum(x**2 + 2*x + 1)", x=[[1.0], [2.0], [3.0], [4.0]])
    assert float(value) == 54.0
    assert grads["x"].ravel().tolist() == [4.0, 6.0, 8.0, 10.0]

    picture = client.activate_png(["sigmoid", "tanh", "relu", "softplus"])
    assert picture.data.startswith(b"\x89PNG") and picture.width == 1400
    try:
        picture.to_pil()
    except ImportError as exc:
        assert "Pillow" in str(exc)
    else:
        raise AssertionError("to_pil() without Pillow must raise ImportError")

    try:
        client.tensor_ops({"op": "ones", "size": [2]}, as_torch=True)
    except ImportError as exc:
        assert "torch" in str(exc)
    else:
        raise AssertionError("as_torch=True without torch must raise ImportError")

    try:
        client.tensor_ops({"op": "zeros", "size": [10**6, 10**6]})
    except tl.TooLargeError as exc:
        assert exc.code == "elements_limit", exc.code
    else:
        raise AssertionError("expected a TooLargeError")

    if "/conv" in client.openapi()["paths"]:
        image = (np.arange(32 * 48) % 251).astype(np.uint8).reshape(32, 48)
        result = client.conv(image, kernels=["edge", "random"], seed=0)
        assert result.output.shape == (1, 2, 28, 44), result.output.shape
        print("conv of a numpy picture:", result.output.shape)

assert "torch" not in sys.modules and "PIL" not in sys.modules
print("no-torch client ok")
"""

_OFFLINE = re.compile(
    r"Could not find a version|No matching distribution|NewConnectionError|"
    r"Temporary failure in name resolution|Network is unreachable|Max retries exceeded"
)


def test_client_installs_and_works_without_torch(tmp_path: Path, live_server: str) -> None:
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    # A copy, so that the build leaves nothing in the source tree.
    source = shutil.copytree(
        CLIENT_SOURCE,
        tmp_path / "torchlab-client",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if _OFFLINE.search(output):
            pytest.skip(
                f"the package index cannot be reached to install httpx and numpy:\n{output}"
            )
        pytest.fail(f"pip install ./clients/python failed:\n{output}")
    script = tmp_path / "use_client.py"
    script.write_text(NO_TORCH_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "TORCHLAB_API_KEY"}}
    run = subprocess.run(
        [str(python), str(script), live_server],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: the installed package, not the source tree
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no-torch client ok" in run.stdout


def load_tutorial_chapters() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(number, routes, figures) of each chapter, read from examples/tutorial.py."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import tutorial  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return [(c.number, c.routes, c.figures) for c in tutorial.CHAPTERS]


def test_tutorial_end_to_end(tmp_path: Path, live_server: str) -> None:
    chapters = load_tutorial_chapters()
    runnable = [c for c in chapters if all(route in ROUTES for route in c[1])]
    missing = [c[0] for c in chapters if c not in runnable]
    out = tmp_path / "figures"
    env = {
        **{k: v for k, v in os.environ.items() if k != "TORCHLAB_API_KEY"},
        "PYTHONPATH": os.pathsep.join(
            [str(CLIENT_SOURCE), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "MPLBACKEND": "Agg",
    }
    command = [sys.executable, str(ROOT / "examples" / "tutorial.py"), live_server]
    command += ["--out", str(out), "--quick"]
    if missing:
        command.append("--skip-missing")
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert run.returncode == 0, run.stdout + run.stderr

    expected = {figure for _, _, figures in runnable for figure in figures}
    assert {path.name for path in out.glob("*.png")} == expected
    for name in expected:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
        with Image.open(out / name) as picture:
            picture.verify()
        with Image.open(out / name) as picture:
            picture.load()
            assert picture.width >= 100
            assert picture.height >= 50
    # What the tutorial prints, where it is fixed by the tutorial.
    text = run.stdout
    assert "y: 54.0" in text
    assert "[10.]]" in text  # the gradient 2x + 2
    assert "torch_unsqueeze.shape [3, 1, 2, 2]" in text
    for number, *_ in runnable:
        assert f"=== {number} " in text
    if "6.1" not in missing:
        assert "size after the convolution: [2, 508, 764]" in text
    if "6.2" not in missing:
        assert "max pooling 2×2, stride 2: [2, 254, 382]" in text
    if "7.1" not in missing:
        assert "b_x.shape: [10, 4]" in text
        assert "b_y.dtype: int64" in text
    if "2" not in missing:
        assert "a strong correlation" in text
