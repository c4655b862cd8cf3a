"""The blocking client is generated from the async one and is its exact twin."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torchlab_client as tl

from tests.clients.conftest import CLIENT_SOURCE

SCRIPT = CLIENT_SOURCE / "scripts" / "unasync.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_sync_client_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_a_hand_edited_sync_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = load_script()
    stale = tmp_path / "_sync_client.py"
    text = script.TARGET.read_text()
    stale.write_text(text.replace("def health(self)", "def health(self, extra: int = 0)"))
    monkeypatch.setattr(script, "TARGET", stale)
    monkeypatch.setattr(sys, "argv", ["unasync.py", "--check"])
    assert script.main() == 1
    stale.write_text(text)
    assert script.main() == 0


def test_the_generated_file_says_so() -> None:
    docstring = ast.get_docstring(ast.parse(load_script().TARGET.read_text()))
    assert docstring is not None
    assert "GENERATED from ``_async_client.py``" in docstring


def public_methods(cls: type) -> dict[str, Callable[..., object]]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_") and name not in {"close", "aclose"}
    }


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    sync, async_ = public_methods(tl.Client), public_methods(tl.AsyncClient)
    assert list(sync) == list(async_)
    assert len(sync) == 25
    for name, method in sync.items():
        twin = async_[name]
        assert inspect.signature(method) == inspect.signature(twin), name
        assert method.__doc__ == twin.__doc__, name
        assert not inspect.iscoroutinefunction(method), name
        assert inspect.iscoroutinefunction(twin), name


def test_closing_and_context_managers_match() -> None:
    assert inspect.signature(tl.Client.close) == inspect.signature(tl.AsyncClient.aclose)
    assert inspect.iscoroutinefunction(tl.AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(tl.AsyncClient.__aexit__)
    assert not inspect.iscoroutinefunction(tl.Client.__enter__)
