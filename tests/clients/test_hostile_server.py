"""Both clients against a broken or hostile server (``httpx.MockTransport``): every try ends
by its ``timeout``, no answer is held past ``max_response_bytes`` nor allocated from a
``Content-Length`` alone, and every malformed answer is a :class:`ProtocolError`. Also the
input boundary: numpy masked arrays are refused before anything is sent."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torchlab_client as tl
from torchlab_client import _base

MiB = 1 << 20
FRAME = "Inference-Header-Content-Length"
CLONE = [{"op": "clone", "x": "a", "out": "b"}]
BENCHMARK = {
    "torch_version": "2",
    "cuda_available": False,
    "m": 8,
    "k": 8,
    "n": 8,
    "dtype": "float32",
    "flops_per_run": 1024,
    "results": [],
    "device": "cpu",
    "elapsed_ms": 1.0,
}


def framed(answer: dict[str, Any], payload: bytes) -> bytes:
    text = json.dumps(answer).encode()
    return text + b" " * (-len(text) % 64) + payload


def frame_headers(body: bytes, json_length: int, **extra: str) -> dict[str, str]:
    return {
        "content-type": "application/octet-stream",
        FRAME: str(json_length),
        "content-length": str(len(body)),
        **extra,
    }


def sse(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class Served:
    """A handler for ``MockTransport`` that answers every request with ``answer()`` and
    counts the requests and the chunks of the body it gave."""

    def __init__(self, answer: Callable[[], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer()


def sync_client(served: Served, **options: Any) -> tl.Client:
    return tl.Client("http://mock", transport=httpx.MockTransport(served), **options)


def async_call(served: Served, call: Callable[[tl.AsyncClient], Any], **options: Any) -> Any:
    async def main() -> Any:
        transport = httpx.MockTransport(served)
        async with tl.AsyncClient("http://mock", transport=transport, **options) as client:
            return await call(client)

    return asyncio.run(main())


# --- the deadline of a try ---------------------------------------------------------------------

PIECES = 100
"""A dripping server's pieces, one every GAP seconds: 5 s in all, ten times the timeout, so
that a client without a deadline fails the test rather than hanging it."""
GAP = 0.05
TIMEOUT = 0.5


def dripping(piece: bytes, first: bytes = b"") -> Iterator[bytes]:
    yield first
    for _ in range(PIECES):
        time.sleep(GAP)
        yield piece


async def adripping(piece: bytes, first: bytes = b"") -> AsyncIterator[bytes]:
    yield first
    for _ in range(PIECES):
        await asyncio.sleep(GAP)
        yield piece


STREAM = {"content-type": "text/event-stream"}
PROGRESS = sse("progress", {"done": 1, "total": 10, "unit": "run"})
DRIPS = {
    "plain": ({"content-type": "application/json"}, b" ", b"{"),
    "progress": (STREAM, PROGRESS, b""),
    "keep-alive": (STREAM, b": keep-alive\n\n", b""),
}


def call_for(kind: str) -> Callable[[Any], Any]:
    if kind == "plain":
        return lambda client: client.health()
    return lambda client: client.benchmark(8, 8, 8, progress=lambda event: None)


@pytest.mark.parametrize("kind", list(DRIPS))
def test_a_dripping_answer_ends_at_the_deadline_sync(kind: str) -> None:
    headers, piece, first = DRIPS[kind]
    served = Served(lambda: httpx.Response(200, headers=headers, content=dripping(piece, first)))
    started = time.monotonic()
    with sync_client(served, timeout=TIMEOUT) as client, pytest.raises(tl.TransportTimeoutError):
        call_for(kind)(client)
    elapsed = time.monotonic() - started
    # the blocking client notices the deadline at the first piece past it
    assert TIMEOUT <= elapsed < TIMEOUT + 10 * GAP, elapsed
    assert len(served.requests) == 1  # a timeout is not retried


@pytest.mark.parametrize("kind", list(DRIPS))
def test_a_dripping_answer_ends_at_the_deadline_async(kind: str) -> None:
    headers, piece, first = DRIPS[kind]
    served = Served(lambda: httpx.Response(200, headers=headers, content=adripping(piece, first)))
    started = time.monotonic()
    with pytest.raises(tl.TransportTimeoutError, match=r"timeout=0\.5 s"):
        async_call(served, call_for(kind), timeout=TIMEOUT)
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 10 * GAP


def test_a_stream_within_its_timeout_returns_its_result() -> None:
    """Progress events over several times their gap, and the result before the timeout:
    what a long fit with a progress bar sends. Its events are all taken."""
    steps = 6

    def stream() -> Iterator[bytes]:
        for done in range(steps):
            time.sleep(GAP)
            yield sse("progress", {"done": done + 1, "total": steps, "unit": "run"})
        yield sse("result", BENCHMARK)

    served = Served(lambda: httpx.Response(200, headers=STREAM, content=stream()))
    events: list[tl.ProgressEvent] = []
    with sync_client(served, timeout=steps * GAP * 4) as client:
        result = client.benchmark(8, 8, 8, progress=events.append)
    assert result.m == 8
    assert [event.done for event in events] == list(range(1, steps + 1))


def test_each_try_has_its_own_deadline() -> None:
    """A 503 then the answer, each taking most of the timeout: together longer than it,
    yet each try is within its own."""
    busy = json.dumps({"error": "busy", "code": "worker_lost", "details": {}}).encode()

    def slowly(status: int, body: bytes) -> httpx.Response:
        def pieces() -> Iterator[bytes]:
            time.sleep(0.6 * TIMEOUT)
            yield body

        return httpx.Response(
            status, headers={"content-type": "application/json"}, content=pieces()
        )

    answers = iter([slowly(503, busy), slowly(200, b'{"status": "ok"}')])
    served = Served(lambda: next(answers))
    started = time.monotonic()
    retry = tl.Retry(total=1, backoff_factor=0.01)
    with sync_client(served, timeout=TIMEOUT, retries=retry) as client:
        assert client.health().ok
    assert time.monotonic() - started > TIMEOUT
    assert len(served.requests) == 2


# --- the size of an answer ---------------------------------------------------------------------


def test_a_content_length_alone_allocates_nothing_large() -> None:
    """A 256 MiB Content-Length over a few hundred bytes: the buffer is made no larger than
    PREALLOCATE_BYTES (it was the whole 256 MiB), and the short answer is a ProtocolError."""
    payload = np.arange(4, dtype="<f4").tobytes()
    body = framed(
        {"outputs": {"b": {"shape": [4], "dtype": "float32", "binary_data_size": 16}}}, b""
    )
    json_length = len(body)
    body += payload
    headers = frame_headers(body, json_length, **{"content-length": str(256 * MiB)})
    served = Served(lambda: httpx.Response(200, headers=headers, content=body))
    tracemalloc.start()
    try:
        with (
            sync_client(served, retries=0) as client,
            pytest.raises(tl.ProtocolError, match="short"),
        ):
            client.tensor_ops(CLONE, inputs={"a": [1.0]}, returns=["b"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < _base.PREALLOCATE_BYTES + 16 * MiB < 256 * MiB, peak


def test_a_content_length_over_the_limit_is_refused_before_reading() -> None:
    body = framed({"outputs": {}}, b"")
    headers = frame_headers(body, len(body), **{"content-length": "2000000000"})
    served = Served(lambda: httpx.Response(200, headers=headers, content=body))
    with sync_client(served) as client, pytest.raises(tl.ResponseTooLargeError) as caught:
        client.tensor_ops(CLONE, inputs={"a": [1.0]}, returns=["b"])
    assert caught.value.limit == _base.DEFAULT_MAX_RESPONSE_BYTES
    assert "2,000,000,000" in str(caught.value)
    assert len(served.requests) == 1  # not retried


def test_a_binary_answer_past_the_preallocation_is_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The buffer grows past PREALLOCATE_BYTES as the bytes come: the arrays are right,
    writable, and views of one buffer."""
    monkeypatch.setattr(_base, "PREALLOCATE_BYTES", 1000)
    a = np.arange(30_000, dtype=np.float32)
    b = np.arange(5_000, dtype=np.int64)
    outputs = {
        "a": {"shape": [30_000], "dtype": "float32", "binary_data_size": a.nbytes},
        "b": {"shape": [5_000], "dtype": "int64", "binary_data_size": b.nbytes},
    }
    body = framed({"outputs": outputs}, b"")
    json_length = len(body)
    body += a.tobytes() + b.tobytes()

    def answer() -> httpx.Response:
        pieces = (body[i : i + 4096] for i in range(0, len(body), 4096))
        return httpx.Response(200, headers=frame_headers(body, json_length), content=pieces)

    with sync_client(Served(answer)) as client:
        result = client.tensor_ops(CLONE, inputs={"a": [1.0]}, returns=["a", "b"])
    np.testing.assert_array_equal(result["a"], a)
    np.testing.assert_array_equal(result["b"], b)
    assert result["a"].flags.writeable
    assert result["a"].base is not None and not np.shares_memory(result["a"], result["b"])


def chunked(size: int, produced: list[int]) -> Iterator[bytes]:
    yield b'{"status": "ok", "pad": "'
    for _ in range(size // (64 * 1024)):
        produced.append(1)
        yield b"x" * (64 * 1024)
    yield b'"}'


def test_a_chunked_answer_over_the_limit_is_given_up_early() -> None:
    produced: list[int] = []
    served = Served(lambda: httpx.Response(200, content=chunked(64 * MiB, produced)))
    limited = sync_client(served, max_response_bytes=MiB)
    with limited as client, pytest.raises(tl.ResponseTooLargeError, match="1,048,576"):
        client.health()
    assert len(produced) <= MiB // (64 * 1024) + 1  # read no further than the limit
    # and the limit is the client's: a larger one takes the same answer
    produced.clear()
    served = Served(lambda: httpx.Response(200, content=chunked(4 * MiB, produced)))
    with sync_client(served).with_options(max_response_bytes=8 * MiB) as client:
        assert client.health().ok


@functools.cache
def gzipped_spaces() -> bytes:
    """64 KiB of gzip that inflate to 64 MiB: ``{``, spaces, ``}``."""
    return gzip.compress(b"{" + b" " * (64 * MiB) + b"}", compresslevel=9)


def bomb(status: int) -> httpx.Response:
    """The bomb, in 4 KiB pieces as a socket gives them (httpx inflates each piece)."""
    content = gzipped_spaces()
    pieces = (content[i : i + 4096] for i in range(0, len(content), 4096))
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    return httpx.Response(status, headers=headers, content=pieces)


def test_a_gzip_bomb_is_counted_inflated_and_not_asked_for() -> None:
    served = Served(lambda: bomb(200))
    limited = sync_client(served, max_response_bytes=4 * MiB)
    with limited as client, pytest.raises(tl.ResponseTooLargeError):
        client.health()
    assert served.requests[0].headers["accept-encoding"] == "identity"


def test_an_error_answer_is_read_to_its_first_mib() -> None:
    served = Served(lambda: bomb(400))
    gzipped_spaces()  # made before the measure
    tracemalloc.start()
    try:
        with sync_client(served) as client, pytest.raises(tl.ValidationError) as caught:
            client.health()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.status_code == 400
    assert caught.value.response is not None
    assert len(caught.value.response.content) == _base.MAX_ERROR_BYTES
    assert peak < 32 * MiB, peak


def test_an_event_line_over_the_limit_is_given_up() -> None:
    def stream() -> Iterator[bytes]:
        yield b"event: progress\ndata: "
        for _ in range(64):
            yield b"x" * MiB
        yield b"\n\n"

    served = Served(lambda: httpx.Response(200, headers=STREAM, content=stream()))
    limited = sync_client(served, max_response_bytes=2 * MiB)
    with limited as client, pytest.raises(tl.ResponseTooLargeError):
        client.benchmark(8, 8, 8, progress=lambda event: None)


# --- malformed answers -------------------------------------------------------------------------


def binary(outputs: dict[str, Any], payload: bytes) -> Callable[[], httpx.Response]:
    body = framed({"outputs": outputs, "device": "cpu", "elapsed_ms": 1}, b"")
    json_length = len(body)
    body += payload
    return lambda: httpx.Response(200, headers=frame_headers(body, json_length), content=body)


def plain(text: bytes) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(200, headers={"content-type": "application/json"}, content=text)


MALFORMED = {
    "negative shape": binary(
        {
            "a": {"shape": [2, -1], "dtype": "float32", "binary_data_size": -8},
            "b": {"shape": [10], "dtype": "float32", "binary_data_size": 40},
        },
        np.arange(8, dtype="<f4").tobytes(),
    ),
    "shape past numpy": binary(
        {"b": {"shape": [2**62, 2**62, 0], "dtype": "float32", "binary_data_size": 0}}, b""
    ),
    "size not a number": binary(
        {"b": {"shape": [1], "dtype": "float32", "binary_data_size": "4"}}, b"\0" * 4
    ),
    "unknown dtype": binary({"b": {"shape": [1], "dtype": "cfloat", "binary_data_size": 8}}, b""),
    "JSON nested deep": plain(b'{"outputs": {"b": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}"),
    "b64 shape past numpy": plain(
        json.dumps(
            {"outputs": {"b": {"shape": [0, 10**30], "dtype": "float32", "b64": ""}}}
        ).encode()
    ),
    "b64 not base64": plain(
        json.dumps({"outputs": {"b": {"shape": [1], "dtype": "float32", "b64": "a"}}}).encode()
    ),
    "ragged data": plain(
        json.dumps(
            {"outputs": {"b": {"shape": [2], "dtype": "float32", "data": [[1], 2]}}}
        ).encode()
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_answer_is_a_protocol_error(name: str) -> None:
    with sync_client(Served(MALFORMED[name]), retries=0) as client, pytest.raises(tl.ProtocolError):
        client.tensor_ops(CLONE, inputs={"a": [1.0]}, returns=["b"])


MALFORMED_EVENTS = {
    "error status not a number": sse("error", {"error": "x", "code": "y", "status": "abc"}),
    "error status not an error's": sse("error", {"error": "x", "code": "y", "status": 200}),
    "error not JSON": b"event: error\ndata: {oops\n\n",
    "progress without done": sse("progress", {"total": 3, "unit": "run"}),
    "progress done not a number": sse("progress", {"done": "x", "total": 3, "unit": "run"}),
    "progress a list": sse("progress", [1, 2, 3]),
    "result without fields": sse("result", {"m": 8}),
    "not UTF-8": b"event: progress\ndata: \xff\xfe\n\n",
}


@pytest.mark.parametrize("name", list(MALFORMED_EVENTS))
def test_a_malformed_event_is_a_protocol_error(name: str) -> None:
    answer = MALFORMED_EVENTS[name]
    served = Served(lambda: httpx.Response(200, headers=STREAM, content=answer))
    with sync_client(served) as client, pytest.raises(tl.ProtocolError):
        client.benchmark(8, 8, 8, progress=lambda event: None)


def test_an_error_event_is_still_its_error() -> None:
    body = {"error": "over", "code": "flops_limit", "details": {"limit": "max_flops"}}
    answer = sse("error", {**body, "status": 413})
    served = Served(lambda: httpx.Response(200, headers=STREAM, content=answer))
    with sync_client(served) as client, pytest.raises(tl.TooLargeError) as caught:
        client.benchmark(8, 8, 8, progress=lambda event: None)
    assert caught.value.limit == "max_flops"


# --- the input boundary ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 10_000], ids=["json", "binary"])
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "nothing-masked"])
def test_a_masked_array_is_refused_before_sending(size: int, masked: bool) -> None:
    data = np.arange(float(size))
    array = np.ma.masked_array(data, mask=(np.arange(size) == 1) & masked)
    served = Served(lambda: httpx.Response(200, json={"outputs": {}}))
    with sync_client(served) as client:
        with pytest.raises(TypeError, match=r"masked array.*filled"):
            client.tensor_ops([{"op": "sum", "x": "a", "out": "b"}], inputs={"a": array})
        with pytest.raises(TypeError, match="masked array"):
            client.tensor_ops(CLONE, inputs={"a": [array, array]})
    assert served.requests == []
