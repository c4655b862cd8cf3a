"""The server's protocol (:mod:`service.protocol`): a request's head has ``header_timeout_s``
to arrive, and its body reaches the app whole, on a real uvicorn over a socket (a small
ASGI app: the app never sees a head)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, BinaryIO

import orjson
import pytest
import uvicorn

from service import protocol
from service.protocol import SMALL_PIECE_BYTES, BodyPieces, HeadTimedProtocol
from tests.live import free_port

TIMEOUT = 0.5
UNFINISHED = 8 << 20


async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """Answers ``{"path": ...}``; ``/slow`` after a second; ``/echo`` with the body it
    received, and the number of messages it came in and their types in headers."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    if scope["path"] == "/unfinished":  # as an answer cut off at send_timeout_s
        start = {"type": "http.response.start", "status": 200}
        size = str(64 * UNFINISHED).encode()
        await send({**start, "headers": [(b"content-length", size)]})  # type: ignore[operator]
        piece = {"type": "http.response.body", "body": b"x" * UNFINISHED, "more_body": True}
        await send(piece)  # type: ignore[operator]
        return
    body = orjson.dumps({"path": scope["path"]})
    extra = []
    if scope["path"] == "/echo":
        pieces = []
        while True:
            message = await receive()  # type: ignore[operator]
            pieces.append(message["body"])
            if not message["more_body"]:
                break
        body = b"".join(pieces)
        types = ",".join(sorted({type(piece).__name__ for piece in pieces}))
        extra = [(b"x-messages", str(len(pieces)).encode()), (b"x-types", types.encode())]
    await send(  # type: ignore[operator]
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCHLAB_HEADER_TIMEOUT_S", str(TIMEOUT))
    protocol.header_timeout_s.cache_clear()
    number = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=number,
        http=HeadTimedProtocol,
        lifespan="off",
        log_level="error",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield number
    finally:
        server.should_exit = True
        thread.join(10)
        mp.undo()
        protocol.header_timeout_s.cache_clear()


Connect = Callable[[], socket.socket]


@pytest.fixture
def connect(port: int) -> Iterator[Connect]:
    """Opens connections to the server, closed after the test."""
    with contextlib.ExitStack() as opened:
        yield lambda: opened.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))


def read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def assert_late_head(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    payload = orjson.loads(body)
    assert payload["code"] == "header_timeout"
    assert payload["details"] == {"limit": "header_timeout_s", "allowed": TIMEOUT}


def test_a_connection_that_sends_nothing_is_answered_408_and_closed(
    connect: Connect,
) -> None:
    start = time.monotonic()  # before the connection: the server counts from its accept
    conn = connect()
    answer = read_all(conn)
    assert TIMEOUT <= time.monotonic() - start < TIMEOUT + 1.0
    assert_late_head(answer)


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_timeout(
    connect: Connect,
) -> None:
    conn = connect()
    start = time.monotonic()
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(OSError):  # the server closes the connection while it trickles
        for _ in range(40):
            conn.sendall(b"X")
            time.sleep(0.05)
    assert time.monotonic() - start < TIMEOUT + 1.0
    assert_late_head(read_all(conn))


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
    ],
    ids=["two lengths", "length and chunked", "bad chunk size", "control character"],
)
def test_a_request_the_parser_refuses_is_a_400_in_the_contracts_shape(
    connect: Connect, head: bytes
) -> None:
    conn = connect()
    conn.sendall(head)
    answer = read_all(conn)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/json" in status.lower()
    assert b"connection: close" in status.lower()
    payload = orjson.loads(body)
    assert payload["code"] == "malformed_request"
    assert isinstance(payload["error"], str) and payload["details"] == {}


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def read_answer(reader: BinaryIO, headers: dict[bytes, bytes] | None = None) -> bytes:
    """The body of the next answer on a connection (``conn.makefile("rb")``), a 200; its
    headers into ``headers``."""
    status = reader.readline()
    assert status.startswith(b"HTTP/1.1 200 "), status
    seen = {} if headers is None else headers
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        seen[name.strip().lower()] = value.strip()
    return reader.read(int(seen.get(b"content-length", b"0")))


def test_a_kept_alive_connection_is_timed_from_each_requests_first_byte(
    connect: Connect,
) -> None:
    conn = connect()
    answers = conn.makefile("rb")
    conn.sendall(request("/one"))
    assert orjson.loads(read_answer(answers)) == {"path": "/one"}
    time.sleep(TIMEOUT + 0.5)  # idle: uvicorn's keep-alive (5 s) times that, not the head's
    conn.sendall(request("/two"))
    assert orjson.loads(read_answer(answers)) == {"path": "/two"}
    conn.sendall(b"GET /three HTTP/1.1\r\n")  # then nothing more
    start = time.monotonic()
    assert_late_head(read_all(conn))
    assert TIMEOUT - 0.05 <= time.monotonic() - start < TIMEOUT + 1.0


def test_a_slow_answer_and_a_request_pipelined_behind_it_are_not_late_heads(
    connect: Connect,
) -> None:
    conn = connect()
    answers = conn.makefile("rb")
    conn.sendall(request("/slow") + request("/after"))  # the second waits for the first
    assert orjson.loads(read_answer(answers)) == {"path": "/slow"}  # a second: twice the timeout
    assert orjson.loads(read_answer(answers)) == {"path": "/after"}
    conn.sendall(request("/last"))
    assert orjson.loads(read_answer(answers)) == {"path": "/last"}
    conn.close()


def test_body_pieces_hand_over_a_lone_piece_without_a_copy_and_join_several() -> None:
    pieces = BodyPieces(bytearray())
    assert len(pieces) == 0 and bytes(pieces) == b""
    one = os.urandom(300_000)
    pieces += one
    assert len(pieces) == len(one) and bytes(pieces) is one
    pieces += b"tail"
    assert len(pieces) == len(one) + 4 and bytes(pieces) == one + b"tail"
    assert bytes(BodyPieces(bytearray(b"held"))) == b"held"


def test_small_pieces_are_held_in_one_bytearray_not_an_object_each() -> None:
    pieces = BodyPieces()
    sent = [os.urandom(1) for _ in range(50_000)]
    for piece in sent:
        pieces += piece
    assert len(pieces.pieces) == 1 and len(pieces) == 50_000
    assert sys.getsizeof(pieces.pieces[0]) < 2 * 50_000  # not 50,000 objects of 34 bytes
    large = os.urandom(SMALL_PIECE_BYTES)
    pieces += large
    pieces += b"after"
    assert [type(p) for p in pieces.pieces] == [bytearray, bytes, bytearray]
    assert pieces.pieces[1] is large
    assert bytes(pieces) == b"".join(sent) + large + b"after"
    assert type(bytes(pieces)) is bytes
    assert bytes(BodyPieces(b"held")) == b"held"


def stub_protocol(held: bytes | bytearray) -> Any:
    """A :class:`HeadTimedProtocol` with just what ``on_body`` uses, its body ``held``."""
    proto = HeadTimedProtocol.__new__(HeadTimedProtocol)
    proto.parser = SimpleNamespace(should_upgrade=lambda: False)  # type: ignore[assignment]
    proto.flow = SimpleNamespace(pause_reading=lambda: None)  # type: ignore[assignment]
    proto.cycle = SimpleNamespace(  # type: ignore[assignment]
        body=held, response_complete=False, message_event=asyncio.Event()
    )
    return proto


def test_the_pieces_replace_uvicorns_bytearray_and_leave_an_older_uvicorns_bytes() -> None:
    proto = stub_protocol(bytearray())
    proto.on_body(b"a" * SMALL_PIECE_BYTES)
    proto.on_body(b"b")
    assert type(proto.cycle.body) is BodyPieces
    assert bytes(proto.cycle.body) == b"a" * SMALL_PIECE_BYTES + b"b"
    # Small pieces stay in uvicorn's bytearray (a tiny body costs no object of ours), which
    # a large piece then takes over as it is, without a copy.
    held = bytearray()
    small = stub_protocol(held)
    small.on_body(b"c")
    small.on_body(b"d")
    assert small.cycle.body is held and held == b"cd"
    large = b"e" * SMALL_PIECE_BYTES
    small.on_body(large)
    assert type(small.cycle.body) is BodyPieces
    assert small.cycle.body.pieces[0] is held and small.cycle.body.pieces[1] is large
    assert bytes(small.cycle.body) == b"cd" + large
    older = stub_protocol(b"")  # before 0.42: bytes, handed to the app as they are
    older.on_body(b"a")
    older.on_body(b"b")
    assert older.cycle.body == b"ab" and type(older.cycle.body) is bytes


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_537, 3_000_001])
def test_a_body_reaches_the_app_whole_as_bytes_on_a_kept_alive_connection(
    connect: Connect, size: int
) -> None:
    conn = connect()
    answers = conn.makefile("rb")
    for sent_in in (1, 7):  # at once, then in pieces with pauses between them
        body = os.urandom(size)
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        step = max(1, -(-size // sent_in))
        for start in range(0, size, step):
            conn.sendall(body[start : start + step])
            if sent_in > 1:
                time.sleep(0.01)
        headers: dict[bytes, bytes] = {}
        assert read_answer(answers, headers) == body
        assert headers[b"x-types"] == b"bytes"
        if size > 200_000:  # more than one message: the pieces were handed over as they came
            assert int(headers[b"x-messages"]) > 1
    conn.sendall(request("/after"))
    assert orjson.loads(read_answer(answers)) == {"path": "/after"}
    conn.close()


def test_a_chunked_body_reaches_the_app_whole(connect: Connect) -> None:
    conn = connect()
    answers = conn.makefile("rb")
    parts = [os.urandom(n) for n in (10, 100_000, 1, 400_000)]
    conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for part in parts:
        conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.01)
    conn.sendall(b"0\r\n\r\n")
    assert read_answer(answers) == b"".join(parts)
    conn.close()


def test_a_connection_closed_with_an_answer_never_taken_is_aborted(port: int) -> None:
    """An answer cut off (the app returned before its end) to a client that reads nothing:
    uvicorn closes the connection gracefully, which waits for the client to take what is
    buffered, forever. It is aborted once it has been closing for the header timeout."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", port))
    conn.sendall(b"GET /unfinished HTTP/1.1\r\nhost: x\r\n\r\n")
    time.sleep(3 * TIMEOUT + 0.5)  # a tick to see it closing, one more to abort it
    received = 0
    conn.settimeout(5.0)
    try:
        while chunk := conn.recv(1 << 16):
            received += len(chunk)
    except ConnectionResetError:
        pass
    finally:
        conn.close()
    assert received < UNFINISHED // 2  # what was buffered when it was aborted is gone
