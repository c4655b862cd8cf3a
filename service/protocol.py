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

It also hands a request's body to the app in the pieces the parser made, without copying
them (:class:`BodyPieces`). uvicorn appends each piece to a ``bytearray`` and copies that
into a new ``bytes`` for every message: two copies of every byte, into fresh buffers of a
quarter of a megabyte that the allocator maps (and the kernel zero-fills) anew each time.
A 4 MB body took 4.7 ms to arrive on loopback that way, and 1.8 ms this way. Serve with::

    uvicorn service.main:app --http service.protocol:HeadTimedProtocol
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

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
        self.pieces: list[bytes | bytearray] = [bytearray(held)] if held else []
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout_s()
        self._head_began: float | None = None
        """When the head in progress began (``loop.time()``), or ``None`` between heads."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._closing_since: float | None = None
        """When the connection was first seen closing with its answer not yet taken."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_began = self.loop.time()
        self._head_timer = self.loop.call_later(self.header_timeout, self._look_at_head)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_began is None:
            self._head_began = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_began = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        held: object = cycle.body
        # A new request, or the app took the last pieces. (uvicorn before 0.42 keeps
        # ``bytes`` and hands them over as they are: left to do so.)
        if type(held) is bytearray:
            cycle.body = BodyPieces(held)  # type: ignore[assignment]
        super().on_body(body)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(MALFORMED_REQUEST_RESPONSE)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _look_at_head(self) -> None:
        self._head_timer = None
        now = self.loop.time()
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
