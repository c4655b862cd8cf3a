"""The error-code registry, the limits, and the README tables generated from them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import Limits, Settings
from service.errors import ErrorCode, LimitExceeded, ServiceError, limit_code
from service.reference import STATUS_MEANINGS, render

ROOT = Path(__file__).resolve().parents[2]
CODES = {code.value for code in ErrorCode}


def test_readme_generated_sections_are_up_to_date() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "run: python -m service.reference"


def test_every_status_of_the_registry_is_explained() -> None:
    assert {code.status for code in ErrorCode} <= set(STATUS_MEANINGS)
    assert len(CODES) == len(list(ErrorCode)), "a code is listed twice"


def _literal_codes(path: Path) -> list[str]:
    """String literals that are error codes, passed as ``code=`` or as a call argument."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        values = [kw.value for kw in node.keywords if kw.arg == "code"]
        values += [arg for arg in node.args if isinstance(arg, ast.Constant)]
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                is_code = value.value in CODES and "_" in value.value
                if is_code or any(kw.value is value for kw in node.keywords):
                    found.append(f"{path.relative_to(ROOT)}:{value.lineno}: {value.value!r}")
    return found


def test_no_error_code_is_a_string_literal_outside_the_registry() -> None:
    sources = [p for p in (ROOT / "service").rglob("*.py") if p.name != "errors.py"]
    found = [hit for path in sources for hit in _literal_codes(path)]
    assert found == []


@pytest.mark.parametrize("limit", [name for name in Limits.model_fields if name.startswith("max_")])
def test_every_size_limit_has_its_code_and_a_numeric_request(limit: str) -> None:
    if limit in ("max_inflight_per_device", "max_inflight_body_bytes"):  # queues: 429
        return
    exc = LimitExceeded(limit, 10, 11, "the thing")
    assert exc.code == limit_code(limit)
    assert exc.code.endswith("_limit")
    assert exc.code.status == 413
    assert exc.details == {"limit": limit, "allowed": 10, "requested": 11}
    assert str(exc) == exc.message
    worded = LimitExceeded(limit, 10, 11, "", message="custom words")
    assert str(worded) == worded.message == "custom words"


def test_errors_take_their_status_from_their_code() -> None:
    exc = ServiceError("gone", code=ErrorCode.SHAPE_MISMATCH)
    assert exc.status_code == 422
    assert ServiceError("x").status_code == 500


def test_info_lists_every_limit(client: TestClient, settings: Settings) -> None:
    limits = client.get("/info").json()["limits"]
    assert set(limits) == set(Limits.model_fields)
    assert limits == settings.limits.model_dump()


def test_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHLAB_MAX_CSV_ROWS", "12")
    monkeypatch.setenv("TORCHLAB_MAX_ELEMENTS", "99")
    settings = Settings(max_elements=7)
    assert settings.limits.max_csv_rows == 12  # from the environment
    assert settings.limits.max_elements == 7  # the keyword wins
    assert Settings().limits.max_elements == 99
