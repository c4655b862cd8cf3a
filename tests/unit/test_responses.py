"""Paced responses: what a client that stops reading can hold, and for how long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from service.api.events import event_stream
from service.api.responses import FastJSONResponse
from service.errors import ErrorCode, error_response
from service.waits import SEND_CHUNK_BYTES, body_messages, send_within
from tests.conftest import make_settings

TIMEOUT_S = 0.05

Message = dict[str, Any]


def _scope() -> dict[str, Any]:
    settings = make_settings(send_timeout_s=TIMEOUT_S)
    return {
        "type": "http",
        "app": SimpleNamespace(state=SimpleNamespace(settings=settings)),
    }


def _client(waits: Callable[[Message], float], sent: list[Message]) -> Any:
    """``send`` of a client that takes each message after ``waits(message)`` seconds (at
    once, without a wait, for 0)."""

    async def send(message: Message) -> None:
        if seconds := waits(message):
            await asyncio.sleep(seconds)
        sent.append(message)

    return send


def _deliver(
    body: bytes, waits: Callable[[Message], float], *, holds: bool = False
) -> tuple[list[Message], bool]:
    sent: list[Message] = []
    released = []
    response = FastJSONResponse(body)
    if holds:
        response.on_sent = lambda: released.append(True)
    asyncio.run(response(_scope(), None, _client(waits, sent)))  # type: ignore[arg-type]
    return sent, bool(released)


@pytest.mark.parametrize("size", [0, 100, 3 * SEND_CHUNK_BYTES // 2])
def test_a_client_that_keeps_up_gets_the_body_without_a_timer(
    size: int, timers: list[float]
) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    sent, released = _deliver(body, lambda message: 0, holds=True)
    pieces = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["type"] == "http.response.start"
    assert (b"content-length", str(size).encode()) in sent[0]["headers"]
    assert b"".join(m["body"] for m in pieces) == body
    assert [m.get("more_body", False) for m in pieces] == [True] * (len(pieces) - 1) + [False]
    assert len(pieces) == max(1, -(-size // SEND_CHUNK_BYTES))
    assert released
    assert timers == []


@pytest.mark.parametrize("size", [0, 100, 3 * SEND_CHUNK_BYTES // 2])
@pytest.mark.parametrize("stalls", ["http.response.start", "http.response.body"])
@pytest.mark.parametrize("holds", [False, True])
def test_a_client_that_stops_reading_is_cut_off_at_the_send_timeout(
    size: int, stalls: str, holds: bool, timers: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    sent, released = _deliver(
        b"x" * size, lambda m: 20 * TIMEOUT_S if m["type"] == stalls else 0, holds=holds
    )
    assert stalls not in [m["type"] for m in sent]
    assert released == holds
    assert timers == [pytest.approx(TIMEOUT_S, abs=TIMEOUT_S / 10)]
    assert f"stopped sending a {size}-byte response" in caplog.text


def test_a_client_that_is_slow_but_within_the_timeout_gets_every_piece(
    timers: list[float],
) -> None:
    body = b"y" * (2 * SEND_CHUNK_BYTES + 10)
    sent, _ = _deliver(body, lambda m: TIMEOUT_S / 5 if m["type"] == "http.response.body" else 0)
    assert b"".join(m["body"] for m in sent[1:]) == body
    # One deadline for the whole body (its pieces took 3/5 of it), from its first wait.
    assert timers == [TIMEOUT_S]


def test_a_client_that_takes_each_piece_in_time_but_not_the_whole_is_cut_off(
    timers: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # A MiB every 29 s with a 30 s timeout held a 512 MiB answer for four hours.
    body = b"z" * (4 * SEND_CHUNK_BYTES)
    sent, released = _deliver(
        body, lambda m: TIMEOUT_S * 0.4 if m["type"] == "http.response.body" else 0, holds=True
    )
    assert 1 < len(sent) < 5  # the start and some pieces, not all four
    assert released
    assert "stopped sending" in caplog.text


def test_a_send_that_waits_gets_what_it_waited_for_and_its_errors_pass_through(
    timers: list[float],
) -> None:
    async def run() -> list[Any]:
        loop = asyncio.get_running_loop()
        got: list[Any] = []

        async def send(message: Message) -> None:
            if message["n"] == 0:
                return  # no wait
            future = loop.create_future()
            loop.call_later(0.01, future.set_result, message["n"] * 2)
            got.append(await future)
            await asyncio.sleep(0)  # a bare yield to the loop on the way
            if message["n"] == 3:
                raise ConnectionResetError("gone")

        for n in (0, 1, 2):
            await send_within({"n": n}, send, 1.0)
        with pytest.raises(ConnectionResetError):
            await send_within({"n": 3}, send, 1.0)
        return got

    assert asyncio.run(run()) == [2, 4, 6]
    assert timers == [1.0] * 3  # none for the send that did not wait


def test_a_cancelled_send_is_cancelled_not_timed_out() -> None:
    cleaned: list[str] = []

    async def send(message: Message) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("send")

    async def run() -> None:
        task = asyncio.create_task(send_within({}, send, 5.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert cleaned == ["send"]


@pytest.mark.parametrize("size", [100, 3 * SEND_CHUNK_BYTES // 2])
def test_a_view_goes_out_as_copies_of_its_pieces(size: int) -> None:
    # An answer in shared memory: what the server keeps of an unread piece must not keep
    # the whole answer's memory.
    source = bytearray(b"z" * size)
    pieces = list(body_messages(memoryview(source)))
    source[:] = b"w" * size  # the memory reused after the response let it go
    assert all(type(m["body"]) is bytes for m in pieces)
    assert b"".join(m["body"] for m in pieces) == b"z" * size


def test_an_error_answer_is_cut_off_at_the_send_timeout_too(
    timers: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # What a request took (room among the bodies held at once) is held until its answer is
    # sent: an error answer to a client that reads nothing must end too.
    response = error_response(ErrorCode.MALFORMED_BODY, "not JSON")
    sent: list[Message] = []
    stall = _client(lambda m: 20 * TIMEOUT_S, sent)
    asyncio.run(response(_scope(), None, stall))  # type: ignore[arg-type]
    assert sent == []
    assert timers == [TIMEOUT_S]
    assert "stopped sending a" in caplog.text


def _stream(result: bytes, waits: Callable[[Message], float]) -> tuple[list[Message], bool]:
    """An event stream of work that answers ``result`` at once, sent to a client that takes
    each message after ``waits(message)`` seconds; and whether the stream let its work's
    hold (a compute slot, the result's memory) go."""
    sent: list[Message] = []
    released: list[bool] = []

    async def work(progress: Callable[[dict[str, Any]], None]) -> bytes:
        return result

    async def receive() -> Message:
        await asyncio.sleep(3600)  # the client says nothing more
        return {"type": "http.disconnect"}

    response = event_stream(None, work, lambda: released.append(True))  # type: ignore[arg-type]
    asyncio.run(response(_scope(), receive, _client(waits, sent)))
    return sent, bool(released)


def test_an_event_streams_result_is_sent_whole_to_a_client_that_keeps_up() -> None:
    result = b"1" * (3 * SEND_CHUNK_BYTES)
    sent, released = _stream(result, lambda m: 0)
    data = b"".join(m.get("body", b"") for m in sent)
    assert data.endswith(b"event: result\ndata: " + result + b"\n\n")
    assert released


def test_an_event_streams_result_taken_a_piece_at_a_time_is_cut_off_at_the_send_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each MiB in time but not the whole result: a client reading 64 KiB/s had held a
    # 256 MiB result in shared memory, and its stream open, for an hour.
    result = b"2" * (4 * SEND_CHUNK_BYTES)
    big = SEND_CHUNK_BYTES // 2

    def waits(message: Message) -> float:
        return TIMEOUT_S * 0.4 if len(message.get("body", b"")) > big else 0

    sent, released = _stream(result, waits)
    pieces = [m for m in sent if len(m.get("body", b"")) > big]
    assert 1 <= len(pieces) < 4  # some of the result's pieces, not all four
    assert released
    assert "stopped a stream" in caplog.text
