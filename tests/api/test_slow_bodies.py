"""Bodies that arrive slowly, or not at all, through the app's ASGI interface: a body has
``body_timeout_s`` plus a second for every ``body_min_rate`` bytes that arrive (then 408,
and the connection closes), and takes room among the bodies held at once
(``max_inflight_body_bytes``) from before it is read until its request is answered (no room
within ``queue_timeout_s``: 429)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from bench._asgi import http_scope
from service.main import create_app
from tests.api.test_system import assert_error
from tests.conftest import make_settings

TINY = orjson.dumps({"steps": [{"op": "arange", "end": 4}]})
MiB = 1 << 20


class Answer:
    """What the app sent back: status, headers, body (JSON), and when it had answered."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.seconds = 0.0

    def json(self) -> Any:
        return orjson.loads(self.body)

    # assert_error reads these
    @property
    def status_code(self) -> int:
        return self.status

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


async def _exchange(
    app: Any,
    path: str,
    headers: dict[str, str],
    pieces: Sequence[tuple[float, bytes]],
    *,
    ends: bool,
    query: str = "",
    reads: bool = True,
) -> Answer:
    """A request whose body comes as ``pieces`` (each after its delay in seconds); past
    them the client sends nothing more (``ends``: the last piece ends the body). A client
    that ``reads`` nothing never takes the answer's start."""
    answer = Answer()
    given = iter(enumerate(pieces))
    start = time.perf_counter()

    async def receive() -> dict[str, Any]:
        step = next(given, None)
        if step is None:
            await asyncio.Event().wait()  # a client that sends nothing more
        assert step is not None
        index, (delay, piece) = step
        await asyncio.sleep(delay)
        last = ends and index == len(pieces) - 1
        return {"type": "http.request", "body": piece, "more_body": not last}

    async def send(message: dict[str, Any]) -> None:
        if not reads:
            await asyncio.Event().wait()
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            if not message.get("more_body"):
                answer.seconds = time.perf_counter() - start

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await app(http_scope("POST", path, raw, query.encode()), receive, send)
    return answer


@pytest.fixture(scope="module")
def slow() -> Iterator[TestClient]:
    """An app with a short body deadline (1 s plus a second per KiB) and room for one
    body of the largest size (4 MiB) at once, waited for 0.2 s."""
    settings = make_settings(
        body_timeout_s=1.0,
        body_min_rate=1024,
        max_inflight_body_bytes=4 * MiB,
        queue_timeout_s=0.2,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _run(client: TestClient, *exchanges: Any) -> list[Answer]:
    async def together() -> list[Answer]:
        return list(await asyncio.gather(*exchanges))

    assert client.portal is not None
    return client.portal.call(together)


def _json_headers(length: int) -> dict[str, str]:
    return {"content-type": "application/json", "content-length": str(length)}


def _held(client: TestClient) -> float | None:
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    return registry.get_sample_value("torchlab_body_bytes_held")  # type: ignore[no-any-return]


def _assert_no_room(answer: Answer, requested: int) -> None:
    """A 429 for a body that found no room among those held at once (4 MiB) in time."""
    body = assert_error(answer, 429, "too_many_requests")
    assert body["details"] == {
        "limit": "max_inflight_body_bytes",
        "allowed": 4 * MiB,
        "requested": requested,
    }
    assert answer.headers["retry-after"] == "1"


def _assert_timed_out(answer: Answer, received: int, declared: int) -> None:
    body = assert_error(answer, 408, "body_timeout")
    assert body["details"] == {
        "limit": "body_timeout_s",
        "allowed": 1.0,
        "received": received,
        "declared": declared,
    }
    assert answer.headers["connection"] == "close"
    # 1 s, plus a second per KiB received
    assert 1.0 <= answer.seconds < 1.0 + received / 1024 + 2.0


@pytest.mark.parametrize(
    ("declared", "sent"),
    [(len(TINY) + 10, 0), (len(TINY) + 10, 5), (100_000, 0), (100_000, 2000)],
    ids=["small-nothing", "small-part", "large-nothing", "large-part"],
)
def test_a_json_body_that_stops_coming_is_408(slow: TestClient, declared: int, sent: int) -> None:
    # Small bodies are read by the fast lane, large ones by the whole stack: both time out.
    app = slow.app
    pieces = [(0.0, TINY[:sent] if sent < len(TINY) else b" " * sent)] if sent else []
    (answer,) = _run(
        slow, _exchange(app, "/tensor/ops", _json_headers(declared), pieces, ends=False)
    )
    _assert_timed_out(answer, sent, declared)
    assert slow.get("/health").status_code == 200


def test_a_binary_body_that_stops_after_its_json_part_is_408(slow: TestClient) -> None:
    head = orjson.dumps(
        {
            "inputs": {"a": {"shape": [262_120], "dtype": "float32", "binary_data_size": MiB - 96}},
            "steps": [{"op": "clone", "x": "a"}],
        }
    )
    head += b" " * (96 - len(head) % 96 if len(head) % 96 else 0)
    headers = {
        "inference-header-content-length": str(len(head)),
        "content-length": str(len(head) + MiB - 96),
    }
    (answer,) = _run(slow, _exchange(slow.app, "/tensor/ops", headers, [(0.0, head)], ends=False))
    body = assert_error(answer, 408, "body_timeout")
    assert body["details"]["received"] == len(head)
    assert answer.headers["connection"] == "close"


def test_an_upload_that_stops_is_408(slow: TestClient) -> None:
    boundary = "xyz"
    start = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG"
        + b"0" * 1000
    )
    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(200_000),
    }
    (answer,) = _run(slow, _exchange(slow.app, "/conv", headers, [(0.0, start)], ends=False))
    _assert_timed_out(answer, len(start), 200_000)


def test_a_body_that_keeps_the_minimum_rate_is_never_cut_off(slow: TestClient) -> None:
    # 3 KiB in 1 KiB pieces 0.8 s apart: 1.6 s in all, past the first 1 s, but each piece
    # earns a second.
    body = TINY + b" " * (3 * 1024 - len(TINY))
    pieces = [(0.8 if i else 0.0, body[i : i + 1024]) for i in range(0, len(body), 1024)]
    (answer,) = _run(
        slow, _exchange(slow.app, "/tensor/ops", _json_headers(len(body)), pieces, ends=True)
    )
    assert answer.status == 200, answer.text
    assert answer.json()["outputs"]["out"]["data"] == [0, 1, 2, 3]
    assert answer.seconds > 1.5


def test_a_body_slower_than_the_minimum_rate_is_cut_off(slow: TestClient) -> None:
    # 100 bytes every 0.25 s is 400 bytes/s, under the 1024 bytes/s kept up.
    body = TINY + b" " * (2000 - len(TINY))
    pieces = [(0.25, body[i : i + 100]) for i in range(0, len(body), 100)]
    (answer,) = _run(
        slow, _exchange(slow.app, "/tensor/ops", _json_headers(len(body)), pieces, ends=True)
    )
    body_json = assert_error(answer, 408, "body_timeout")
    assert 0 < body_json["details"]["received"] < len(body)


def test_bodies_past_the_room_for_them_wait_then_are_429(slow: TestClient) -> None:
    # One stalled 3 MiB body holds 3 of the 4 MiB: a 2 MiB one finds no room within
    # queue_timeout_s; a small one takes none and goes through; once the stalled one is cut
    # off (408), the 2 MiB one fits.
    big = 3 * MiB
    padded = TINY + b" " * (2 * MiB - len(TINY))

    async def second() -> Answer:
        await asyncio.sleep(0.05)  # after the stalled one has taken its room
        return await _exchange(
            slow.app, "/tensor/ops", _json_headers(len(padded)), [(0.0, padded)], ends=True
        )

    async def small() -> Answer:
        await asyncio.sleep(0.05)
        return await _exchange(
            slow.app, "/tensor/ops", _json_headers(len(TINY)), [(0.0, TINY)], ends=True
        )

    async def held() -> float | None:
        await asyncio.sleep(0.5)  # the stalled one in, the 2 MiB one refused
        return _held(slow)

    stalled, refused, passed, during = _run(
        slow,
        _exchange(slow.app, "/tensor/ops", _json_headers(big), [(0.0, b" " * 100)], ends=False),
        second(),
        small(),
        held(),
    )
    assert during == big
    _assert_timed_out(stalled, 100, big)
    _assert_no_room(refused, 2 * MiB)
    assert passed.status == 200, passed.text
    (later,) = _run(
        slow,
        _exchange(slow.app, "/tensor/ops", _json_headers(len(padded)), [(0.0, padded)], ends=True),
    )
    assert later.status == 200, later.text
    metrics = slow.get("/metrics").text
    assert 'torchlab_limit_refusals_total{limit="max_inflight_body_bytes"}' in metrics
    assert 'torchlab_limit_refusals_total{limit="body_timeout_s"}' in metrics
    assert "torchlab_body_bytes_held 0.0" in metrics  # every charge given back


CHUNKED = {"content-type": "application/json", "transfer-encoding": "chunked"}


def test_chunked_bodies_that_stall_early_take_no_room(slow: TestClient) -> None:
    """Four chunked bodies that sent a byte each and stalled: charged the largest body each
    (as they once were), they took all the room there is and every body over 16 KiB got a
    429. Charged as they grow, they take none, and a 1 MiB body goes through."""
    padded = TINY + b" " * (MiB - len(TINY))

    async def second() -> Answer:
        await asyncio.sleep(0.05)
        return await _exchange(
            slow.app, "/tensor/ops", _json_headers(len(padded)), [(0.0, padded)], ends=True
        )

    *stalled, passed = _run(
        slow,
        *(_exchange(slow.app, "/tensor/ops", CHUNKED, [(0.0, b" ")], ends=False) for _ in range(4)),
        second(),
    )
    assert passed.status == 200, passed.text
    for answer in stalled:
        assert_error(answer, 408, "body_timeout")
    assert _held(slow) == 0


def test_a_chunked_body_is_charged_as_it_grows(slow: TestClient) -> None:
    """3 MiB of a chunked body in, the rest a second later: it holds 3 MiB of the 4 MiB of
    room meanwhile (a 2 MiB body finds none), and gives it back once answered."""
    padded = TINY + b" " * (3 * MiB - len(TINY))
    grown: list[float | None] = []

    async def second() -> Answer:
        await asyncio.sleep(0.2)
        grown.append(_held(slow))
        other = b" " * (2 * MiB)
        return await _exchange(
            slow.app, "/tensor/ops", _json_headers(len(other)), [(0.0, other)], ends=True
        )

    chunked, refused = _run(
        slow,
        _exchange(slow.app, "/tensor/ops", CHUNKED, [(0.0, padded), (1.0, b"")], ends=True),
        second(),
    )
    assert chunked.status == 200, chunked.text
    assert grown[0] is not None and 3 * MiB <= grown[0] <= 4 * MiB
    _assert_no_room(refused, 2 * MiB)
    assert _held(slow) == 0


def test_a_chunked_body_with_no_room_to_grow_is_429(slow: TestClient) -> None:
    """A stalled 3 MiB body holds 3 of the 4 MiB: a chunked body that grows to 2 MiB finds
    no room within queue_timeout_s, and is answered 429 and its connection closed."""
    big = 3 * MiB

    async def second() -> Answer:
        await asyncio.sleep(0.05)
        return await _exchange(
            slow.app, "/tensor/ops", CHUNKED, [(0.0, b" " * (2 * MiB))], ends=False
        )

    stalled, refused = _run(
        slow,
        _exchange(slow.app, "/tensor/ops", _json_headers(big), [(0.0, b" " * 100)], ends=False),
        second(),
    )
    _assert_timed_out(stalled, 100, big)
    _assert_no_room(refused, 2 * MiB)
    assert refused.headers["connection"] == "close"
    assert _held(slow) == 0


def test_a_content_length_of_other_digits_is_no_length(slow: TestClient) -> None:
    # "²" is a digit to str.isdigit, and a byte of latin-1 a server could pass on; it is not
    # a length (int() refuses it), so the body is read as one without a declared length.
    answers: list[dict[str, Any]] = []

    async def ask() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": TINY, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            answers.append(message)

        headers = [(b"content-type", b"application/json"), (b"content-length", b"\xb2")]
        await slow.app(http_scope("POST", "/tensor/ops", headers), receive, send)

    assert slow.portal is not None
    slow.portal.call(ask)
    assert answers[0]["status"] == 200
    assert orjson.loads(answers[1]["body"])["outputs"]["out"]["data"] == [0, 1, 2, 3]


def test_an_answer_never_read_gives_its_bodys_room_back_at_the_send_timeout() -> None:
    # A 3 MiB body (not JSON: a 400) whose client reads nothing holds 3 of the 4 MiB of room
    # until its answer is sent or given up (send_timeout_s, 0.5 s here): a 2 MiB body that
    # waits up to 3 s for room gets it then.
    settings = make_settings(
        max_inflight_body_bytes=4 * MiB, queue_timeout_s=3.0, send_timeout_s=0.5
    )
    junk = b"x" * (3 * MiB)
    padded = TINY + b" " * (2 * MiB - len(TINY))
    with TestClient(create_app(settings)) as client:

        async def second() -> Answer:
            await asyncio.sleep(0.1)
            return await _exchange(
                client.app, "/tensor/ops", _json_headers(len(padded)), [(0.0, padded)], ends=True
            )

        async def stuck() -> Answer | None:
            asked = _exchange(
                client.app,
                "/tensor/ops",
                _json_headers(len(junk)),
                [(0.0, junk)],
                ends=True,
                reads=False,
            )
            try:
                return await asyncio.wait_for(asked, 5.0)
            except TimeoutError:
                return None  # still sending its answer

        stuck_answer, answer = _run(client, stuck(), second())
    assert stuck_answer is not None, "the answer nobody read was never given up"
    assert stuck_answer.status == 0  # nothing was taken
    assert answer.status == 200, answer.text
    assert 0.3 < answer.seconds < 2.5  # it waited for the send timeout, not for ever


def test_a_request_without_its_key_takes_no_room() -> None:
    # Refused (401) before its body is read: a caller without a key, whose answer is never
    # taken, holds none of the room the callers with one need.
    settings = make_settings(
        api_keys=["sesame"], max_inflight_body_bytes=4 * MiB, queue_timeout_s=0.3
    )
    padded = TINY + b" " * (2 * MiB - len(TINY))
    with TestClient(create_app(settings)) as client:

        async def keyless() -> Answer | None:
            asked = _exchange(
                client.app, "/tensor/ops", _json_headers(3 * MiB), [], ends=False, reads=False
            )
            try:
                return await asyncio.wait_for(asked, 1.5)
            except TimeoutError:
                return None  # its 401 still waits to be taken

        async def keyed() -> Answer:
            await asyncio.sleep(0.1)
            headers = {**_json_headers(len(padded)), "x-api-key": "sesame"}
            return await _exchange(client.app, "/tensor/ops", headers, [(0.0, padded)], ends=True)

        _, answer = _run(client, keyless(), keyed())
    assert answer.status == 200, answer.text
