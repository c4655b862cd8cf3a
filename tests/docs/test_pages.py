"""The docs pages without a browser: what they load, where from, and who may load it."""

from __future__ import annotations

import math
import re
from importlib.resources import files
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.routes.docs import ASSETS, ASSETS_PACKAGE, ASSETS_PATH, PUBLIC_PATHS
from service.main import create_app
from tests.api.test_system import assert_error
from tests.conftest import make_settings

KEY = "docs-test-key"
_LINKS = re.compile(r"""(?:src|href)=["']([^"']+)["']|url: ?'([^']+)'""")


@pytest.fixture(scope="module")
def keyed() -> TestClient:
    """An app with API keys: the docs must stay open."""
    return TestClient(create_app(make_settings(api_keys=[KEY])), raise_server_exceptions=False)


def _links(html: str) -> list[str]:
    return [a or b for a, b in _LINKS.findall(html)]


def test_root_redirects_to_the_docs(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/docs"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_load_only_files_the_service_serves(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    links = _links(response.text)
    assert links, response.text
    for link in links:
        assert link.startswith("/"), f"{page} loads {link} from elsewhere"
        assert client.get(link).status_code == 200, link
    assert "fonts.googleapis.com" not in response.text


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_assets_are_the_packaged_files(client: TestClient, name: str) -> None:
    response = client.get(f"{ASSETS_PATH}/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == ASSETS[name]
    assert "max-age" in response.headers["cache-control"]
    assert response.content == files(ASSETS_PACKAGE).joinpath("static", name).read_bytes()


def test_an_unknown_asset_is_a_404_in_the_error_shape(client: TestClient) -> None:
    body = assert_error(client.get(f"{ASSETS_PATH}/swagger-ui.js.map"), 404, "not_found")
    assert body["details"]["assets"] == sorted(ASSETS)


def test_docs_pages_are_not_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not PUBLIC_PATHS & set(paths)


def test_docs_stay_open_when_api_keys_are_on(keyed: TestClient) -> None:
    for path in sorted(PUBLIC_PATHS | {"/openapi.json"}):
        response = keyed.get(path, follow_redirects=False)
        assert response.status_code in (200, 307), path
    assert_error(keyed.get("/info"), 401, "unauthorized")
    assert keyed.get("/info", headers={"X-API-Key": KEY}).status_code == 200
    schema = keyed.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_the_description_explains_tensors_binary_and_errors(client: TestClient) -> None:
    description = client.get("/openapi.json").json()["info"]["description"]
    for text in ('{"b64", "shape", "dtype"}', "?encoding=b64", '{"error"', "multipart/form-data"):
        assert text in description


# --- the examples as the page sends them -------------------------------------------------


def as_javascript_sends(value: Any) -> Any:
    """``value`` after ``JSON.stringify(JSON.parse(...))``: JavaScript has one number type,
    so ``1.0`` goes out as ``1``."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [as_javascript_sends(item) for item in value]
    if isinstance(value, dict):
        return {key: as_javascript_sends(item) for key, item in value.items()}
    return value


def _path_examples(operation: dict[str, Any]) -> dict[str, Any]:
    """Each path parameter's shown example (what the page fills in)."""
    values: dict[str, Any] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            shown = parameter.get("examples")
            assert shown, f"{operation['operationId']}: {parameter['name']} shows no example"
            values[parameter["name"]] = next(iter(shown.values()))["value"]
    return values


def _json_operations() -> list[tuple[str, str, dict[str, Any], Any]]:
    schema = create_app(make_settings()).openapi()
    operations = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            example = content.get("example")
            if example is None:
                ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                example = schema["components"]["schemas"][ref]["examples"][0]
            operations.append((path, method, _path_examples(operation), example))
    return operations


OPERATIONS = _json_operations()


@pytest.mark.parametrize(
    ("path", "method", "path_values", "example"),
    OPERATIONS,
    ids=[f"{m} {p}" for p, m, _, _ in OPERATIONS],
)
def test_the_shown_example_works_as_the_page_sends_it(
    client: TestClient, path: str, method: str, path_values: dict[str, Any], example: Any
) -> None:
    path = path.format(**path_values)
    response = client.request(method, path, json=as_javascript_sends(example))
    assert response.status_code == 200, response.text


def test_the_schema_is_built_at_start_up_and_served_as_written_once() -> None:
    app = create_app(make_settings())
    assert app.openapi_schema is None
    with TestClient(app) as client:
        assert app.openapi_schema is not None  # before any GET /openapi.json
        first = client.get("/openapi.json")
        again = client.head("/openapi.json")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json() == app.openapi()
    assert again.status_code == 200 and again.content == b""
    assert again.headers["content-length"] == str(len(first.content))
    assert app.openapi_body() is app.openapi_body()  # type: ignore[attr-defined]


def test_the_schema_names_the_root_path_among_its_servers() -> None:
    app = create_app(make_settings())
    with TestClient(app, root_path="/torchlab") as client:
        servers = client.get("/openapi.json").json()["servers"]
    assert servers[0] == {"url": "/torchlab"}
