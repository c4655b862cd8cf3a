"""The docs page's "Try it out" with the example shown returns 200, for every route.

Walks the OpenAPI schema, so a route added later is covered without a change here.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.conftest import make_settings

app = create_app(make_settings())
SCHEMA = app.openapi()
OPERATIONS = [
    (path, method, operation)
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return SCHEMA["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


def _example_body(operation: dict[str, Any]) -> Any:
    content = operation["requestBody"]["content"]["application/json"]
    if "example" in content:
        return content["example"]
    schema = _resolve(content["schema"])
    examples = schema.get("examples")
    assert examples, f"{operation['operationId']}: the request model shows no example"
    return examples[0]


def _example_path(path: str, operation: dict[str, Any]) -> str:
    """``path`` with each path parameter filled with its documented example (the value the
    docs page's "Try it out" shows)."""
    values: dict[str, Any] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "path":
            continue
        name = parameter["name"]
        shown = parameter.get("examples") or {}
        if shown:
            values[name] = next(iter(shown.values()))["value"]
        elif "example" in parameter:
            values[name] = parameter["example"]
        else:
            examples = _resolve(parameter["schema"]).get("examples")
            assert examples, f"{operation['operationId']}: path parameter {name} shows no example"
            values[name] = examples[0]
    return path.format(**values)


@pytest.mark.parametrize(
    ("path", "method", "operation"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS]
)
def test_the_shown_example_works(path: str, method: str, operation: dict[str, Any]) -> None:
    path = _example_path(path, operation)
    with TestClient(app) as client:
        if "requestBody" in operation:
            response = client.request(method, path, json=_example_body(operation))
        else:
            response = client.request(method, path)
    assert response.status_code == 200, response.text


def test_every_operation_has_a_summary_and_a_description() -> None:
    for path, method, operation in OPERATIONS:
        assert operation.get("summary"), f"{method} {path}"
        assert operation.get("description"), f"{method} {path}"
