"""The docs pages in a real browser: headless Chromium (Debian's package, driven by
Playwright) against a live uvicorn, with every name but 127.0.0.1 unresolvable, so that a
page that needs the internet fails here as it would on a machine without it.

Skipped, with the reason, where Chromium is not installed (``.ci/run`` installs it). The
screenshots are written to ``build/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("playwright", reason="playwright is installed by `make test`")
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Request,
    sync_playwright,
)

from tests import live

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
KEY = "docs-browser-key"
STEP_MS = 30_000
"""Longest wait for one thing on a page (a response, a rendered list)."""

CHROMIUM = os.environ.get("CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (`apt-get install chromium`; .ci/run does it)",
    ),
]

# Chromium resolves no name but 127.0.0.1 and makes no background requests of its own.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# The start-up probe of the device rates takes seconds; fixed rates skip it.
CALIBRATION = '{"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}'


# --- servers and browser ------------------------------------------------------------------


class LiveServer:
    """``uvicorn service.main:app`` on a free loopback port, with ``env`` on top of the
    environment less its ``TORCHLAB_*`` variables."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = live.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environment = {"TORCHLAB_CALIBRATION": CALIBRATION, **env}
        self.process = live.spawn_uvicorn(self.port, environment, log, protocol=False)

    def wait_ready(self) -> None:
        live.wait_for_health(self.url, self.process, self.log)

    def stop(self) -> None:
        live.stop(self.process)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Two live services, started together: one as configured by default, and one with API
    keys that computes in threads, without worker processes (it only answers ``/info``)."""
    logs = tmp_path_factory.mktemp("uvicorn")
    started = {
        "open": LiveServer(logs / "open.log"),
        "keyed": LiveServer(logs / "keyed.log", TORCHLAB_API_KEYS=KEY, TORCHLAB_ISOLATE="false"),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def server(servers: dict[str, LiveServer]) -> str:
    return servers["open"].url


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert CHROMIUM is not None
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


class RequestLog:
    """Every request a browser context makes, for the check that none left the machine."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.blocked: list[str] = []
        self.bodies: dict[str, bytes] = {}

    def sent(self, request: Request) -> None:
        self.urls.append(request.url)
        if request.method == "POST":
            self.bodies[urlsplit(request.url).path] = request.post_data_buffer or b""

    def failed(self, request: Request) -> None:
        if request.failure in ("csp", "net::ERR_BLOCKED_BY_CSP"):
            self.blocked.append(request.url)  # stopped by the page's policy, in the browser

    def outside(self) -> list[str]:
        """The requests to anywhere but loopback that the browser let out (``blob:`` and
        ``data:`` URLs are local)."""
        return [
            url
            for url in self.urls
            if urlsplit(url).scheme not in ("blob", "data")
            and urlsplit(url).hostname not in ("127.0.0.1", "localhost")
            and url not in self.blocked
        ]


@contextmanager
def confined_context(browser: Browser) -> Iterator[tuple[BrowserContext, RequestLog]]:
    """A fresh browser context whose requests are logged; on leaving, none may have left
    the machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_MS)
    log = RequestLog()
    context.on("request", log.sent)
    context.on("requestfailed", log.failed)
    yield context, log
    context.close()
    assert log.urls, "the pages made no request at all"
    assert log.outside() == [], "requests left the machine"


@pytest.fixture(scope="module")
def docs_context(browser: Browser) -> Iterator[tuple[BrowserContext, RequestLog]]:
    with confined_context(browser) as context:
        yield context


@pytest.fixture(scope="module")
def docs(server: str, docs_context: tuple[BrowserContext, RequestLog]) -> Page:
    """The default service's docs page, loaded once (from ``/``) for the tests that follow:
    each opens its own operations."""
    page = docs_context[0].new_page()
    page.goto(server + "/")
    assert urlsplit(page.url).path == "/docs"
    page.locator(".opblock").first.wait_for()
    return page


@pytest.fixture(scope="module")
def requests_made(docs_context: tuple[BrowserContext, RequestLog]) -> RequestLog:
    return docs_context[1]


def screenshot(target: Page | Locator, name: str, *, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    if isinstance(target, Page):
        target.screenshot(path=path, full_page=full_page)
    else:
        target.screenshot(path=path)
    return path


# --- driving Swagger UI -------------------------------------------------------------------


def try_it_out(page: Page, operation_id: str) -> Locator:
    """Expand the operation and press "Try it out"; returns its block."""
    block = page.locator(f".opblock[id$='-{operation_id}']")
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    return block


def execute(block: Locator) -> Locator:
    """Press "Execute" and return the row of the response the page shows."""
    clear = block.locator("button.btn-clear")
    if clear.count():  # the answer to an earlier "Execute": gone before the next one comes
        clear.click()
        block.locator(".live-responses-table").wait_for(state="detached")
    block.locator("button.execute").click()
    row = block.locator(".live-responses-table tbody tr.response").first
    row.wait_for()
    return row


def status_of(row: Locator) -> int:
    return int(row.locator(".response-col_status").inner_text().strip())


def json_of(row: Locator) -> Any:
    return json.loads(row.locator(".response-col_description .highlight-code pre").inner_text())


def body_editor(block: Locator) -> Locator:
    return block.locator("textarea.body-param__text")


def choose_form(block: Locator, files: dict[str, Path], fields: dict[str, str]) -> None:
    """Switch the body to ``multipart/form-data``, pick ``files`` in the file pickers and
    type ``fields``."""
    block.locator(".opblock-section-request-body select").select_option("multipart/form-data")
    for name, path in files.items():
        block.locator(f"tr[data-property-name='{name}'] input[type=file]").set_input_files(path)
    for name, value in fields.items():
        block.locator(f"tr[data-property-name='{name}'] input[type=text]").fill(value)


def without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "elapsed_ms"}


def assert_page_shows_the_api_answer(
    server: str, path: str, row: Locator, requests_made: RequestLog
) -> dict[str, Any]:
    """The page shows a 200 whose JSON is what the API answers to the body the page sent."""
    assert status_of(row) == 200, row.inner_text()
    shown = json_of(row)
    sent = requests_made.bodies[path]
    direct = httpx.post(server + path, content=sent, headers={"Content-Type": "application/json"})
    assert direct.status_code == 200, direct.text
    assert without_timing(shown) == without_timing(direct.json())
    result: dict[str, Any] = shown
    return result


# --- the tests ----------------------------------------------------------------------------


def test_docs_list_every_operation_offline(
    server: str, docs: Page, requests_made: RequestLog
) -> None:
    schema = httpx.get(server + "/openapi.json").json()
    expected = {
        operation["operationId"] for item in schema["paths"].values() for operation in item.values()
    }
    listed = docs.locator(".opblock").evaluate_all("blocks => blocks.map(b => b.id)")
    assert {block_id.rsplit("-", 1)[-1] for block_id in listed} == expected
    assert len(listed) == len(expected)
    assert docs.locator(".info .title").inner_text().startswith("torchlab")
    assert "encoding=b64" in docs.locator(".info .description").inner_text()
    assert {urlsplit(url).path for url in requests_made.urls} >= {"/", "/docs", "/openapi.json"}
    assert requests_made.outside() == []
    screenshot(docs, "docs.png", full_page=True)


def test_try_it_out_tensor_ops_and_grad(server: str, docs: Page, requests_made: RequestLog) -> None:
    row = execute(try_it_out(docs, "tensor_ops"))
    assert assert_page_shows_the_api_answer(server, "/tensor/ops", row, requests_made)["outputs"]
    row = execute(try_it_out(docs, "grad"))
    assert assert_page_shows_the_api_answer(server, "/grad", row, requests_made)["grads"]


def test_activate_shows_the_png(docs: Page) -> None:
    block = try_it_out(docs, "activate")
    body = json.loads(body_editor(block).input_value()) | {"format": "png"}
    body_editor(block).fill(json.dumps(body))
    row = execute(block)
    assert status_of(row) == 200, row.inner_text()
    image = row.locator(".response-col_description img")
    image.wait_for()
    # Attached is not decoded: the sizes are 0 until the browser has decoded the picture.
    width, height = image.evaluate(
        "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])"
    )
    assert width > 0 and height > 0
    panels = len(body.get("functions") or [body["function"]])
    assert f"x-panel-count: {panels}" in row.inner_text()
    screenshot(row, "docs-activate-png.png")


def test_upload_a_picture_to_conv(docs: Page, tmp_path: Path) -> None:
    picture = np.random.default_rng(0).integers(0, 256, size=(12, 16), dtype=np.uint8)
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    block = try_it_out(docs, "conv")
    fields = {"kernels": '["sobel_x", "box"]', "kernel_size": "3"}
    choose_form(block, {"image": path}, fields)
    row = execute(block)
    assert status_of(row) == 200, row.inner_text()
    output = json_of(row)["output"]

    x = torch.from_numpy(picture).float()[None, None]
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    box = torch.full((3, 3), 1 / 9)
    expected = torch.nn.functional.conv2d(x, torch.stack([sobel_x, box])[:, None])
    assert output["shape"] == list(expected.shape)
    assert torch.allclose(torch.tensor(output["data"]), expected, atol=1e-3)
    screenshot(block.locator(".opblock-section-request-body"), "docs-conv-upload.png")


def test_upload_a_csv_to_linear_regression(docs: Page, tmp_path: Path) -> None:
    hours = np.arange(1.0, 9.0)
    score = 3.5 * hours + 40 + np.random.default_rng(0).normal(0, 1, hours.size)
    path = tmp_path / "exam.csv"
    path.write_text(
        "hours,score\n" + "".join(f"{h},{s}\n" for h, s in zip(hours, score, strict=True))
    )
    block = try_it_out(docs, "linear_regression")
    choose_form(block, {"file": path}, {"target": "score"})
    row = execute(block)
    assert status_of(row) == 200, row.inner_text()
    model = json_of(row)["model"]
    (coef, intercept), *_ = np.linalg.lstsq(
        np.column_stack([hours, np.ones_like(hours)]), score, rcond=None
    )
    assert model["features"] == ["hours"]
    assert model["coef"] == pytest.approx([coef], rel=1e-6)
    assert model["intercept"] == pytest.approx(intercept, rel=1e-6)


def test_redoc_renders_every_operation(
    server: str, docs_context: tuple[BrowserContext, RequestLog]
) -> None:
    page = docs_context[0].new_page()
    page.goto(server + "/redoc")
    page.locator("h1").first.wait_for()
    assert page.locator("h1").first.inner_text().startswith("torchlab")
    schema = httpx.get(server + "/openapi.json").json()
    count = sum(len(item) for item in schema["paths"].values())
    operations = page.locator("li[data-item-id*='/operation/']")
    operations.nth(count - 1).wait_for(state="attached")
    assert operations.count() == count
    assert "encoding=b64" in page.locator(".api-info").inner_text()
    screenshot(page, "redoc.png")
    page.close()


def test_authorize_with_an_api_key(servers: dict[str, LiveServer], browser: Browser) -> None:
    with confined_context(browser) as (context, _):
        page = context.new_page()
        page.goto(servers["keyed"].url + "/docs")  # the page and its files need no key
        block = try_it_out(page, "info")
        assert status_of(execute(block)) == 401

        page.locator(".auth-wrapper button.authorize").click()
        dialog = page.locator(".modal-ux")
        api_key = dialog.locator(".auth-container").filter(has=page.locator("#api_key_value"))
        api_key.locator("#api_key_value").fill(KEY)
        api_key.locator("button[type=submit]").click()
        dialog.locator("button.close-modal").click()

        row = execute(block)
        assert status_of(row) == 200, row.inner_text()
        assert json_of(row)["auth_required"] is True
