"""Workers write large answers into shared-memory buffers they reuse once the server is done
with them: an answer still being sent to a slow client is never overwritten by the answers
that follow on the same worker."""

from __future__ import annotations

import socket
import time

import httpx
import numpy as np
import orjson

from tests.reliability.conftest import Server

FRAME = "Inference-Header-Content-Length"
ROWS = 1 << 20  # 4 MiB of float32: past every inline limit, one buffer size for all


def _body(seed: int) -> tuple[bytes, dict[str, str], np.ndarray]:
    """A binary request of ``a * 2`` over a float32 vector, and the answer expected."""
    a = np.random.default_rng(seed).standard_normal(ROWS).astype("<f4")
    head = orjson.dumps(
        {
            "inputs": {"a": {"shape": [ROWS], "dtype": "float32", "binary_data_size": a.nbytes}},
            "steps": [{"op": "mul", "x": "a", "y": 2.0}],
        }
    )
    return head + a.tobytes(), {FRAME: str(len(head))}, a * 2


def _values(content: bytes, json_length: int) -> np.ndarray:
    head = orjson.loads(content[:json_length])
    (out,) = head["outputs"].values()
    return np.frombuffer(content, dtype="<f4", count=ROWS, offset=json_length).reshape(out["shape"])


def _read_response(sock: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        body += chunk
    return headers, body


def test_an_answer_sent_slowly_is_not_overwritten_by_the_next_ones(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body, headers, expected = _body(0)
    slow = socket.create_connection((host, int(port)))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # most of the answer waits
    request = (
        f"POST /tensor/ops?encoding=binary HTTP/1.1\r\nHost: {host}\r\n"
        f"{FRAME}: {headers[FRAME]}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    slow.sendall(request + body)
    try:
        time.sleep(0.5)  # its answer computed; its bytes still in the worker's buffer
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for seed in range(1, 9):  # answers of the same size, on the same worker
                others, other_headers, other_expected = _body(seed)
                response = client.post(
                    "/tensor/ops?encoding=binary", content=others, headers=other_headers
                )
                assert response.status_code == 200, response.text
                got = _values(response.content, int(response.headers[FRAME]))
                np.testing.assert_array_equal(got, other_expected)
        answer_headers, answer = _read_response(slow)
    finally:
        slow.close()
    np.testing.assert_array_equal(_values(answer, int(answer_headers[FRAME.lower()])), expected)
