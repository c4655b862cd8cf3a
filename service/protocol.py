"""uvicorn's httptools protocol with a deadline on every request's head.

uvicorn times a connection only between requests (``--timeout-keep-alive``): a client that
connects and sends nothing, or sends a request line and then a header a byte a minute,
holds its connection (a socket, a file descriptor, a parser) for as long as it likes, and a
few thousand such clients use up the server's file descriptors. The app never sees such a
connection: it is called once the head is complete.

:class:`HeadTimedProtocol` gives each request's head (its request line and headers)
``header_timeout_s`` to arrive, counted from the connection's start for the first request
and from the request's first byte for the next ones on a kept-alive connection; a
connection whose head is late is answered 408 ``header_timeout`` and closed. Its body has
its own deadline (``body_timeout_s``, :class:`service.middleware.BodyClock`). A connection
closed with bytes still to write (a client that stopped reading an answer, cut off at
``send_timeout_s``) is aborted once it has been closing for ``header_timeout_s``: uvicorn
closes it gracefully, and would wait for a drain that never comes, holding it forever.

Each connection has one timer, and a request none of its own: a request only notes when
its head began and ended, and the connection's timer, rescheduled to the moment the head
in progress would be late (between heads, every ``header_timeout_s``), closes it then.
While the server itself has stopped reading (a pipelined request waits for the one before
it), the head's time does not count.

A request that the HTTP parser refuses (two different ``Content-Length`` headers, both
``Content-Length`` and ``Transfer-Encoding``, a bad chunk) is answered 400
``malformed_request`` in the contract's shape and the connection closed, where uvicorn
answers plain text.

What the parser is fed is bounded too, since it runs on the event loop. A head may take
:data:`MAX_HEAD_BYTES` and :data:`MAX_HEADER_FIELDS` fields, and so may the trailer section
after a chunked body's last chunk (431 ``header_too_large``): bytes are counted as they
arrive and the excess is never fed to the parser, which joins a header's value anew with
each piece of it (a 60 MB header took 4 s to answer, and stalled every other connection for
2 s). A chunked body costs a Python callback or two a chunk: its chunks must average
:data:`MIN_CHUNK_BYTES`, at most :data:`FREE_CHUNKS` of them ahead (400 ``chunks_too_small``).
A refused connection is answered, then read and dropped until its client leaves (for
``header_timeout_s`` at most): closed at once, it would be reset under a client still
sending, which would never read the answer. A refusal met while the app reads the body ends
that request as if its client had left.

It also hands a request's body to the app in the pieces the parser made, those of
:data:`SMALL_PIECE_BYTES` or more without copying them (:class:`BodyPieces`). uvicorn
appends each piece to a ``bytearray`` and copies that into a new ``bytes`` for every
message: two copies of every byte, into fresh buffers of a quarter of a megabyte that the
allocator maps (and the kernel zero-fills) anew each time.
A 4 MB body took 4.7 ms to arrive on loopback that way, and 1.8 ms this way. Serve with::

    uvicorn service.main:app --http service.protocol:HeadTimedProtocol
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings
from service.errors import ErrorCode


@cache
def header_timeout_s() -> float:
    """``header_timeout_s`` of the settings the server was started with (the environment's)."""
    return float(Settings().limits.header_timeout_s)


def closing_response(
    status: bytes, code: ErrorCode, message: str, details: dict[str, Any]
) -> bytes:
    """An error in the contract's shape, written by the protocol itself (the app never saw
    the request), with ``Connection: close``."""
    body = orjson.dumps({"error": message, "code": code.value, "details": details})
    head = (
        b"HTTP/1.1 %s\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, len(body))
    )
    return head + body


def late_head_response(timeout: float) -> bytes:
    """The 408 that closes a connection whose head took longer than ``timeout`` seconds."""
    return closing_response(
        b"408 Request Timeout",
        ErrorCode.HEADER_TIMEOUT,
        f"the request's line and headers took longer than {timeout:g} s to arrive",
        {"limit": "header_timeout_s", "allowed": timeout},
    )


MALFORMED_REQUEST_RESPONSE = closing_response(
    b"400 Bad Request",
    ErrorCode.MALFORMED_REQUEST,
    "the request is not valid HTTP/1.1: its request line, a header, or its body's framing "
    "(Content-Length and Transfer-Encoding, or chunks) could not be read",
    {},
)
"""What a request the HTTP parser refuses is answered (uvicorn's own answer is plain text)."""


MAX_HEAD_BYTES = 64 * 1024
"""Most bytes a request's head (its request line and headers) may take, and the trailer
section after a chunked body's last chunk, or one chunk-size line with its extensions.
h11 allows a head 16 KiB, nginx 8 KiB a line in at most 32 KiB, Apache 8,190 bytes a line;
browsers send under 8 KiB of cookies. The parser joins a value anew with each piece of it
that arrives: a value that comes a byte per read costs a copy of up to this much per byte
(64 KiB: 2 µs), where a 60 MB one took 4 s and stalled every other connection for 2 s."""

MAX_HEADER_FIELDS = 100
"""Most header fields a request may have, its trailer fields included: Apache's and
gunicorn's default. Each is a pair of ``bytes`` in a list that every lookup of a header
searches from the start."""

MIN_CHUNK_BYTES = 256
"""What a chunked body's chunks must average, in bytes of data. Each chunk costs the event
loop a Python callback or two (1.5 to 2.5 µs on two busy cores): in one-byte chunks, a
socket read of 256 KiB held the loop 70 to 110 ms, and a 2 MB body stalled every other
request for 0.2 to 0.3 s. At 256 bytes a chunk, that read costs 1.4 ms, three times what
parsing 256 KiB of JSON does (0.5 ms). curl sends a stream in chunks of up to 64 KiB,
requests a file in chunks of 16 KiB; httpx and requests send a generator's pieces as it
yields them: a generator of lines, one chunk a line (35 bytes for a CSV row of five
numbers, refused after some 1,200 rows)."""

FREE_CHUNKS = 1024
"""How many chunks a chunked body may run ahead of :data:`MIN_CHUNK_BYTES` a chunk: small
bodies, and runs of small chunks, go through. The credit never grows past that, so a body
cannot save it up in large chunks and spend it in one-byte ones."""


def head_too_large_response(in_body: bool) -> bytes:
    """The 431 that closes a connection whose head, or chunked body's trailer section or
    chunk-size line (``in_body``), passed :data:`MAX_HEAD_BYTES`."""
    what = (
        "the trailer fields after the chunked body's last chunk, or one of its chunk-size lines,"
        if in_body
        else "the request's line and headers"
    )
    return closing_response(
        b"431 Request Header Fields Too Large",
        ErrorCode.HEADER_TOO_LARGE,
        f"{what} take more than {MAX_HEAD_BYTES:,} bytes (max_head_bytes)",
        {"limit": "max_head_bytes", "allowed": MAX_HEAD_BYTES},
    )


TOO_MANY_FIELDS_RESPONSE = closing_response(
    b"431 Request Header Fields Too Large",
    ErrorCode.HEADER_TOO_LARGE,
    f"the request has more than {MAX_HEADER_FIELDS} header fields, trailer fields included "
    "(max_header_fields)",
    {"limit": "max_header_fields", "allowed": MAX_HEADER_FIELDS},
)


def small_chunks_response(chunks: int, received: int) -> bytes:
    """The 400 that closes a connection whose chunked body came in chunks too small."""
    return closing_response(
        b"400 Bad Request",
        ErrorCode.CHUNKS_TOO_SMALL,
        f"the chunked body came in {chunks:,} chunks for its {received:,} bytes: chunks must "
        f"average {MIN_CHUNK_BYTES} bytes or more (min_chunk_bytes), and may run at most "
        f"{FREE_CHUNKS:,} chunks ahead of that (free_chunks)",
        {
            "limit": "min_chunk_bytes",
            "allowed": MIN_CHUNK_BYTES,
            "chunks": chunks,
            "received": received,
        },
    )


CHUNK_CREDIT = FREE_CHUNKS * MIN_CHUNK_BYTES
"""A chunked body's credit when it begins, and the most it holds: each chunk costs
:data:`MIN_CHUNK_BYTES` of it, each byte of data earns a byte."""


class Refused(Exception):
    """Raised in a parser callback to stop the parser where it is; the answer is kept on the
    protocol (``_refusal``)."""


SMALL_PIECE_BYTES = 16 * 1024
"""A body's pieces under this size are copied into one ``bytearray`` rather than kept."""


class BodyPieces:
    """What uvicorn keeps of a body between two of the app's ``receive()``: the parser's
    pieces, in a list. It has what uvicorn uses of its ``bytearray``: ``+=`` of a piece,
    ``len()``, and ``bytes()``, which returns a lone piece as it is and joins several (one
    copy).

    A piece of :data:`SMALL_PIECE_BYTES` or more is kept as the parser made it (a ``bytes``
    of its own: no copy). Smaller ones are appended to a ``bytearray`` at the list's end,
    as uvicorn does with every piece: a chunked body sent in one-byte chunks would
    otherwise hold an object of some 40 bytes for every byte, until the app reads it or
    uvicorn stops reading at 64 KiB held."""

    __slots__ = ("pieces", "size")

    def __init__(self, held: bytes | bytearray = b"") -> None:
        self.pieces: list[bytes | bytearray] = [held] if held else []  # its owner's no more
        self.size = len(held)

    def __iadd__(self, piece: bytes) -> BodyPieces:
        pieces = self.pieces
        if len(piece) >= SMALL_PIECE_BYTES:
            pieces.append(piece)
        elif pieces and type(pieces[-1]) is bytearray:
            pieces[-1] += piece
        else:
            pieces.append(bytearray(piece))
        self.size += len(piece)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        pieces = self.pieces
        if len(pieces) == 1 and type(pieces[0]) is bytes:
            return pieces[0]
        return b"".join(pieces)


class HeadTimedProtocol(HttpToolsProtocol):
    """See the module."""

    # What is counted of the head, trailer or body in progress (the parser's callbacks keep
    # these up to date; each starts as here).
    _unframed = 0
    """Bytes fed to the parser since it last made progress (a head done, a chunk begun, a
    piece of a body): a head, a trailer section or a chunk-size line in progress. What
    follows such progress in the piece fed is not counted (up to 64 KiB; after a body with a
    length, up to a read, 256 KiB): exact for a head that begins a read, as every head but a
    pipelined one does."""
    _in_body = False
    """Whether a request's head is done and its body not yet."""
    _whole = False
    """Whether that body has a length (no chunks, no trailers): reads are fed whole."""
    _fields = 0
    _chunked = False
    """Whether the head has a ``Transfer-Encoding`` field."""
    _chunks = 0
    _received = 0
    """Bytes of the body's data the parser has handed over."""
    _chunk_credit = CHUNK_CREDIT
    _credited = 0
    """``_received`` when ``_chunk_credit`` was last brought up to date."""
    _lingering = False
    """Whether the connection, refused and answered, waits for its client to leave."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout_s()
        self._head_began: float | None = None
        """When the head in progress began (``loop.time()``), or ``None`` between heads."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._closing_since: float | None = None
        """When the connection was first seen closing with its answer not yet taken."""
        self._refusal: bytes | None = None
        """The answer to a request a parser callback refused (by raising :class:`Refused`)."""
        self._refused = False
        """Whether the connection was refused: nothing more it sends is parsed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_began = self.loop.time()
        self._head_timer = self.loop.call_later(self.header_timeout, self._look_at_head)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._whole or self._unframed + len(data) <= MAX_HEAD_BYTES:
            self._unframed += len(data)
            self._feed(data)
            return
        # A head, trailer or chunk-size line may pass MAX_HEAD_BYTES within this read: it is
        # fed a piece at a time, each no longer than what the limit leaves.
        rest = memoryview(data)
        while rest:
            if self._whole:  # a head ended and a body with a length began
                piece, rest = rest, rest[:0]
            else:
                room = MAX_HEAD_BYTES - self._unframed
                if room <= 0:
                    self._refuse(head_too_large_response(self._in_body))
                    return
                piece, rest = rest[:room], rest[room:]
            self._unframed += len(piece)
            if not self._feed(piece):
                return

    def _feed(self, data: bytes | memoryview) -> bool:
        """Feed ``data`` to the parser, as uvicorn does; false once the connection is done
        with the parser (refused, or upgraded)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        except httptools.HttpParserError:
            refusal, self._refusal = self._refusal, None
            if refusal is None:
                self.logger.warning("Invalid HTTP request received.")
            self._refuse(refusal or MALFORMED_REQUEST_RESPONSE)
            return False
        return True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_began is None:
            self._head_began = self.loop.time()
        self._fields = 0
        self._chunked = False
        self._chunks = 0
        self._received = self._credited = 0
        self._chunk_credit = CHUNK_CREDIT

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_HEADER_FIELDS:
            self._refusal = TOO_MANY_FIELDS_RESPONSE
            raise Refused
        super().on_header(name, value)
        if self.headers[-1][0] == b"transfer-encoding":  # the name as uvicorn lowered it
            self._chunked = True

    def on_headers_complete(self) -> None:
        self._head_began = None
        self._unframed = 0
        self._in_body = True
        self._whole = not self._chunked
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._unframed = 0
        self._chunks += 1
        received = self._received
        credit = self._chunk_credit + received - self._credited
        self._chunk_credit = min(credit, CHUNK_CREDIT) - MIN_CHUNK_BYTES
        self._credited = received
        if self._chunk_credit < 0:
            self._refusal = small_chunks_response(self._chunks, received)
            raise Refused

    def on_message_complete(self) -> None:
        self._unframed = 0
        self._in_body = self._whole = False
        super().on_message_complete()

    def on_body(self, body: bytes) -> None:
        self._unframed = 0
        self._received += len(body)
        cycle = self.cycle
        held: object = cycle.body
        # A large piece, kept: the pieces so far (uvicorn's own ``bytearray``, of a new
        # request or since the app took the last ones) become a BodyPieces. Small pieces
        # are appended to uvicorn's ``bytearray`` as it does. (uvicorn before 0.42 keeps
        # ``bytes`` and hands them over as they are: left to do so.)
        if len(body) >= SMALL_PIECE_BYTES and type(held) is bytearray:
            cycle.body = BodyPieces(held)  # type: ignore[assignment]
        super().on_body(body)

    def send_400_response(self, msg: str) -> None:
        self._refuse(MALFORMED_REQUEST_RESPONSE)

    def _refuse(self, answer: bytes) -> None:
        """Parse nothing more, answer ``answer`` unless an answer is already under way, and
        close the connection. The app reading the refused request's body sees its client
        leave (``http.disconnect``), and what it answers is dropped, as for a client gone."""
        self._refused = True
        self._head_began = None  # no 408 after this answer
        cycle = self.cycle
        if not self._in_body:  # a head: the request has no cycle of its own yet
            if cycle is not None and not cycle.response_complete:
                # Pipelined behind a request still being answered: that answer goes out
                # whole, with ``Connection: close``, and the connection closes after it.
                cycle.keep_alive = False
                return
        elif any(waiting is cycle for waiting, _ in self.pipeline):
            # Its body came pipelined behind a request still being answered: cut off.
            cycle.disconnected = True
            self.transport.close()
            return
        else:
            if cycle.response_started:
                answer = b""  # the app's own answer went out, or began to: nothing follows
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.waiting_for_100_continue = False
                cycle.message_event.set()
        self._linger(answer)

    def _linger(self, answer: bytes) -> None:
        """Write ``answer`` and the end of the stream, then drop what the client still sends
        until it closes, for up to ``header_timeout_s``. Closed at once, a connection with
        bytes left unread is reset, and a client still sending its request (a 60 MB header,
        a body) would lose the answer."""
        transport = self.transport
        if transport.is_closing():  # uvicorn closed it after the app's answer
            return
        transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self.flow.resume_reading()
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.header_timeout, self._look_at_head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _look_at_head(self) -> None:
        self._head_timer = None
        now = self.loop.time()
        if self._lingering and not self.transport.is_closing():
            self.transport.close()  # refused, answered, and given header_timeout_s to leave
        if self.transport.is_closing():
            # Closed with bytes it still has to write: a client that stopped reading (an
            # answer cut off at send_timeout_s, which uvicorn closes gracefully, waiting
            # for a drain that never comes). It has header_timeout_s more, then is aborted.
            if self._closing_since is None:
                self._closing_since = now
            elif now - self._closing_since >= self.header_timeout:
                self.transport.abort()
                return
            self._head_timer = self.loop.call_later(self.header_timeout, self._look_at_head)
            return
        if self._head_began is not None and self.flow.read_paused:
            self._head_began = now  # the server stopped reading (a pipelined request waits)
        began = self._head_began
        if began is not None and now - began >= self.header_timeout:
            self.transport.write(late_head_response(self.header_timeout))
            self.transport.close()
            return
        wait = self.header_timeout if began is None else began + self.header_timeout - now
        self._head_timer = self.loop.call_later(wait, self._look_at_head)
