"""The interactive docs, served by the service itself: Swagger UI at ``/docs``, ReDoc at
``/redoc`` and ``GET /`` sending people to ``/docs``.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet
access they are blank. Here the JavaScript, CSS and icon come from the ``fastapi-offline``
package (pinned in ``pyproject.toml``), which ships Swagger UI's bundle and ReDoc's
standalone build; no request leaves the machine when a page loads.
"""

from __future__ import annotations

import importlib.metadata
from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse

from service.errors import NotFound

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
ASSETS_PATH = "/docs/assets"

ASSETS_PACKAGE = "fastapi_offline"
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
"""The files the two pages load, by name, with their media types."""

PUBLIC_PATHS = frozenset(
    {
        "/",
        DOCS_PATH,
        REDOC_PATH,
        OAUTH2_REDIRECT_PATH,
        *(f"{ASSETS_PATH}/{name}" for name in ASSETS),
    }
)
"""Paths that need no API key: people reach the docs before they have entered one."""

SWAGGER_UI_PARAMETERS = {
    "persistAuthorization": True,  # a key entered under "Authorize" survives a reload
    "displayRequestDuration": True,
    "filter": True,
    "validatorUrl": None,  # Swagger UI would otherwise offer swagger.io's online validator
}
"""Swagger UI's options (FastAPI adds its defaults: deep links, the base layout)."""

# The files change only with the package, whose version is in their URLs: caches may keep them.
_CACHE_CONTROL = "public, max-age=86400"

CONTENT_SECURITY_POLICY = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"
"""The pages may load and call only this service (ReDoc's footer would otherwise fetch its
logo from the internet): scripts, styles and requests from the same origin, the pages' own
inline code, and ``data:`` and ``blob:`` URLs (the pictures of PNG answers, ReDoc's worker)."""

router = APIRouter(include_in_schema=False)


@cache
def _assets_version() -> str:
    return importlib.metadata.version(ASSETS_PACKAGE)


def _asset_url(request: Request, name: str) -> str:
    root = request.scope.get("root_path", "")
    return f"{root}{ASSETS_PATH}/{name}?v={_assets_version()}"


def _openapi_url(request: Request) -> str:
    app: FastAPI = request.app
    return f"{request.scope.get('root_path', '')}{app.openapi_url}"


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/")
async def root() -> RedirectResponse:
    """The service's address in a browser opens the docs page."""
    return RedirectResponse(DOCS_PATH)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: every route with "Try it out", file pickers and "Authorize"."""
    app: FastAPI = request.app
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{app.title} - Swagger UI",
        swagger_js_url=_asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset_url(request, "swagger-ui.css"),
        swagger_favicon_url=_asset_url(request, "favicon.png"),
        oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    return _confined(page)


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_PATH)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the same document as one long page, without fonts from the internet."""
    app: FastAPI = request.app
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{app.title} - ReDoc",
        redoc_js_url=_asset_url(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset_url(request, "favicon.png"),
        with_google_fonts=False,
    )
    return _confined(page)


@router.get(f"{ASSETS_PATH}/{{name}}")
async def asset(name: str) -> FileResponse:
    """One of the pages' files, from the installed package."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no docs asset {name!r}", details={"assets": sorted(ASSETS)})
    path = Path(str(files(ASSETS_PACKAGE).joinpath("static", name)))
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": _CACHE_CONTROL})
