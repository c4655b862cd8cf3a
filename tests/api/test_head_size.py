"""What the server's protocol lets reach its HTTP parser, on a real uvicorn serving the app:
a head of at most ``MAX_HEAD_BYTES`` and ``MAX_HEADER_FIELDS`` fields (431
``header_too_large`` past either, the excess never parsed), a trailer section held to the
same, and chunked bodies whose chunks average ``MIN_CHUNK_BYTES`` (400 ``chunks_too_small``).
A refused request is answered in the contract's shape, to a client still sending too, and
one refused while the app reads its body ends cleanly: no 500, nothing logged as an error,
its body's room given back."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
import uvicorn

from service.main import create_app
from service.protocol import (
    FREE_CHUNKS,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    MIN_CHUNK_BYTES,
    HeadTimedProtocol,
)
from tests.conftest import make_settings
from tests.live import free_port

BODY = b'{"steps": [{"op": "zeros", "size": [2]}]}'
MiB = 1 << 20


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    settings = make_settings(
        device="cpu", isolate=False, max_body_bytes=4 * MiB, max_inflight_body_bytes=4 * MiB
    )
    number = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=number,
        http=HeadTimedProtocol,
        log_level="warning",
        log_config=None,  # uvicorn's records reach the root logger, and caplog
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield number
    finally:
        server.should_exit = True
        thread.join(30)


def exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` whole, then read until the server closes: the answer's head (its
    status line and headers) and its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(1 << 16):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def get_health(headers: bytes = b"") -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"


def chunked_ops(chunks: bytes) -> bytes:
    return (
        b"POST /tensor/ops HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks
    )


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


def assert_refused(head: bytes, body: bytes, status: bytes, code: str) -> dict[str, object]:
    """The answer is ``status`` and ``code`` in the contract's shape, closing the
    connection; its details."""
    assert head.startswith(b"HTTP/1.1 " + status), head
    assert b"connection: close" in head.lower()
    payload = orjson.loads(body)
    assert payload["code"] == code and isinstance(payload["error"], str)
    details: dict[str, object] = payload["details"]
    return details


def logged_after(
    caplog: pytest.LogCaptureFixture, requests: int, path: str = "/tensor/ops"
) -> list[logging.LogRecord]:
    """The records logged once the app has logged ``requests`` POSTs to ``path`` (a refused
    one ends when the app sees its client leave, after its answer), for up to 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        posts = [r for r in caplog.records if f" POST {path} " in r.getMessage()]
        if len(posts) >= requests:
            break
        time.sleep(0.02)
    return list(caplog.records)


def assert_ended_cleanly(
    records: list[logging.LogRecord], requests: int, path: str = "/tensor/ops"
) -> None:
    """``requests`` POSTs to ``path`` were logged, none a 500, and nothing as an error or
    with a traceback."""
    posts = [r.getMessage() for r in records if f" POST {path} " in r.getMessage()]
    assert len(posts) == requests and not [p for p in posts if " 500 " in p], posts
    assert [r for r in records if r.levelno >= logging.ERROR or r.exc_info] == []


def padded(size: int) -> bytes:
    """A GET /health whose head takes exactly ``size`` bytes."""
    bare = len(get_health(b"x-pad: \r\n"))
    return get_health(b"x-pad: " + b"a" * (size - bare) + b"\r\n")


def test_a_head_of_max_head_bytes_is_served_and_a_byte_more_is_a_431(port: int) -> None:
    head, _ = exchange(port, padded(MAX_HEAD_BYTES))
    assert head.startswith(b"HTTP/1.1 200 "), head
    details = assert_refused(
        *exchange(port, padded(MAX_HEAD_BYTES + 1)), b"431 ", "header_too_large"
    )
    assert details == {"limit": "max_head_bytes", "allowed": MAX_HEAD_BYTES}


def test_8_kb_of_cookies_and_max_header_fields_are_served_and_a_field_more_is_a_431(
    port: int,
) -> None:
    cookies = b"; ".join(b"c%d=%s" % (i, b"v" * 150) for i in range(52))
    assert len(cookies) > 8000
    head, _ = exchange(port, get_health(b"Cookie: " + cookies + b"\r\n"))
    assert head.startswith(b"HTTP/1.1 200 "), head
    extra = MAX_HEADER_FIELDS - 2  # Host and Connection
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(extra))
    head, _ = exchange(port, get_health(fields))
    assert head.startswith(b"HTTP/1.1 200 "), head
    one_more = fields + b"x-last: v\r\n"
    details = assert_refused(*exchange(port, get_health(one_more)), b"431 ", "header_too_large")
    assert details == {"limit": "max_header_fields", "allowed": MAX_HEADER_FIELDS}


def test_a_client_still_sending_a_huge_head_reads_its_431_and_others_are_not_stalled(
    port: int,
) -> None:
    """A 32 MB header: the parser joined its value anew with each read (a 60 MB one took 4 s
    to answer, and stalled the event loop for 2), and a client refused while it still sent
    was reset before it could read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as other:
        other.sendall(get_health().replace(b"Connection: close", b"Connection: keep-alive"))
        other.recv(1 << 16)
        start = time.perf_counter()
        other.sendall(get_health().replace(b"Connection: close", b"Connection: keep-alive"))
        other.recv(1 << 16)
        baseline = time.perf_counter() - start
        request = get_health(b"x-big: " + b"a" * (32 * MiB) + b"\r\n")
        worst = 0.0
        done = threading.Event()

        def poll() -> None:
            nonlocal worst
            while not done.is_set():
                start = time.perf_counter()
                other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                other.recv(1 << 16)
                worst = max(worst, time.perf_counter() - start)
                time.sleep(0.005)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            answer = exchange(port, request)
        finally:
            done.set()
            poller.join()
    details = assert_refused(*answer, b"431 ", "header_too_large")
    assert details["limit"] == "max_head_bytes"
    assert worst < baseline + 0.5, (worst, baseline)


def test_a_trailer_section_over_max_head_bytes_is_a_431_and_the_request_ends_cleanly(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The app has begun the request (its head was done) and waits for the body's end: the
    trailer after the last chunk escaped the head's limits, and the body's."""
    trailer = b"x-trailer: " + b"a" * (2 * MiB) + b"\r\n\r\n"
    with caplog.at_level(logging.INFO):
        answer = exchange(port, chunked_ops(chunked(BODY) + b"0\r\n" + trailer))
        details = assert_refused(*answer, b"431 ", "header_too_large")
        assert details == {"limit": "max_head_bytes", "allowed": MAX_HEAD_BYTES}
        # A trailer within the limit is served as before.
        head, body = exchange(port, chunked_ops(chunked(BODY) + b"0\r\nx-t: 1\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 200 "), head + body
        assert_ended_cleanly(logged_after(caplog, 2), 2)


def body_bytes_held(port: int) -> float:
    _, body = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    for line in body.decode().splitlines():
        if line.startswith("torchlab_body_bytes_held "):
            return float(line.split()[1])
    raise AssertionError("no torchlab_body_bytes_held in /metrics")


BINARY_PART = orjson.dumps(
    {
        "inputs": {"a": {"shape": [MiB], "dtype": "uint8", "binary_data_size": MiB}},
        "steps": [{"op": "sum", "x": "a"}],
    }
)
READERS = {
    "json": ("/tensor/ops", b"Content-Type: application/json\r\n", BODY[:-1] + b" " * MiB),
    "binary": (
        "/tensor/ops",
        b"Inference-Header-Content-Length: %d\r\n" % len(BINARY_PART),
        BINARY_PART + bytes(MiB // 2),
    ),
    "multipart": (
        "/conv",
        b"Content-Type: multipart/form-data; boundary=b\r\n",
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        + bytes(MiB),
    ),
}
"""How each kind of body is read: its route, its head's own header, and a start of it that
the app waits to see the rest of."""


@pytest.mark.parametrize("kind", READERS)
def test_a_body_in_one_byte_chunks_is_refused_and_gives_its_room_back(
    port: int, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The start of a body in chunks of 64 KiB (charged as it grows), then one-byte chunks:
    the app is reading the body when the refusal comes."""
    path, header, start = READERS[kind]
    large = [start[i : i + 65536] for i in range(0, len(start), 65536)]
    tiny = [b" "] * (FREE_CHUNKS + 2 * MiB // MIN_CHUNK_BYTES)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n%s\r\n" % (
        path.encode(),
        header,
    )
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(head + chunked(*large))
            deadline = time.monotonic() + 5
            while not body_bytes_held(port) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert body_bytes_held(port) > 0  # charged as it grows, while the app reads
            conn.sendall(chunked(*tiny) + b"0\r\n\r\n")
            answer = b""
            while piece := conn.recv(1 << 16):
                answer += piece
        details = assert_refused(*answer.split(b"\r\n\r\n", 1), b"400 ", "chunks_too_small")
        assert details["limit"] == "min_chunk_bytes" and details["allowed"] == MIN_CHUNK_BYTES
        chunks, received = details["chunks"], details["received"]
        assert isinstance(chunks, int) and isinstance(received, int)
        # Refused within FREE_CHUNKS of the first small one: the credit the large chunks
        # earned was not saved up (it would have let received // 256 more through).
        assert received > len(start) and len(large) + FREE_CHUNKS < chunks
        assert chunks < len(large) + 2 * FREE_CHUNKS
        assert_ended_cleanly(logged_after(caplog, 1, path), 1, path)
        assert body_bytes_held(port) == 0


def test_chunks_that_average_min_chunk_bytes_are_served(port: int) -> None:
    """``FREE_CHUNKS`` chunks of a byte, as many as the credit allows, then chunks of
    ``MIN_CHUNK_BYTES`` (a generator of such pieces) to the end: served."""
    body = BODY[:-1] + b" " * (MiB // 2) + b"}"
    pieces = [body[i : i + 1] for i in range(FREE_CHUNKS - 1)]
    rest = body[len(pieces) :]
    pieces += [rest[i : i + MIN_CHUNK_BYTES] for i in range(0, len(rest), MIN_CHUNK_BYTES)]
    head, answer = exchange(port, chunked_ops(chunked(*pieces) + b"0\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 200 "), head + answer
