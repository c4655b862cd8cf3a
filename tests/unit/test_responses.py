"""Paced responses: what a client that stops reading can hold, and for how long."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from service.api.responses import SEND_CHUNK_BYTES, UNTIMED_BODY_BYTES, FastJSONResponse
from tests.conftest import make_settings

TIMEOUT_S = 0.05


def _scope() -> dict[str, Any]:
    settings = make_settings(send_timeout_s=TIMEOUT_S)
    return {"app": SimpleNamespace(state=SimpleNamespace(settings=settings))}


def _send_to_a_client_that_waits(seconds: float, sent: list[dict[str, Any]]) -> Any:
    """``send`` of a client that takes each piece of a body after ``seconds``."""

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.sleep(seconds)
        sent.append(message)

    return send


def _deliver(body: bytes, *, holds: bool, wait_s: float) -> tuple[list[dict[str, Any]], bool]:
    sent: list[dict[str, Any]] = []
    released = []
    response = FastJSONResponse(body)
    if holds:
        response.on_sent = lambda: released.append(True)

    async def run() -> None:
        await response(_scope(), None, _send_to_a_client_that_waits(wait_s, sent))  # type: ignore[arg-type]

    asyncio.run(run())
    return sent, bool(released)


@pytest.mark.parametrize("size", [0, 100, UNTIMED_BODY_BYTES])
def test_a_small_body_that_holds_nothing_is_sent_in_one_piece_without_a_timer(size: int) -> None:
    body = b"x" * size
    sent, _ = _deliver(body, holds=False, wait_s=4 * TIMEOUT_S)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == body and not sent[1].get("more_body", False)
    assert (b"content-length", str(size).encode()) in sent[0]["headers"]


@pytest.mark.parametrize(
    ("size", "holds"), [(100, True), (UNTIMED_BODY_BYTES + 1, False), (UNTIMED_BODY_BYTES, True)]
)
def test_a_body_that_holds_a_slot_or_is_large_is_cut_off_when_the_client_stops_reading(
    size: int, holds: bool, caplog: pytest.LogCaptureFixture
) -> None:
    sent, released = _deliver(b"x" * size, holds=holds, wait_s=4 * TIMEOUT_S)
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert released == holds
    assert f"stopped sending a {size}-byte response" in caplog.text


def test_a_paced_body_goes_in_pieces_to_a_client_that_reads() -> None:
    body = bytes(range(256)) * ((2 * SEND_CHUNK_BYTES + 1000) // 256)
    sent, released = _deliver(body, holds=True, wait_s=0)
    pieces = [m for m in sent if m["type"] == "http.response.body"]
    assert len(pieces) == 3 and b"".join(m["body"] for m in pieces) == body
    assert [m["more_body"] for m in pieces] == [True, True, False]
    assert released
