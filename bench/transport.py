"""Transport cost: a float32 tensor through an identity step (``clone``) over HTTP.

Three wire forms, each against an in-process baseline that does the same decoding and
encoding work without HTTP or the framework:

* JSON (nested list): ``orjson.loads`` -> ``np.array(float32)`` -> ``orjson.dumps`` of the
  response envelope with the array (``OPT_SERIALIZE_NUMPY``). Goal: HTTP <= 1.5x.
* b64 (``{"b64", "shape", "dtype"}`` + ``?encoding=b64``): ``orjson.loads`` ->
  ``base64.b64decode`` -> ``np.frombuffer`` -> ``base64.b64encode`` -> ``orjson.dumps`` of
  the envelope. Goal: HTTP <= 3x.
* binary (the Open Inference Protocol's binary data extension: ``{"shape", "dtype",
  "binary_data_size"}`` then the raw bytes, ``Inference-Header-Content-Length`` and
  ``?encoding=binary``): bytes -> tensor -> bytes, i.e. ``orjson.loads`` of the JSON part
  -> ``torch.frombuffer`` -> the identity step (``clone``) -> the framed response
  (``orjson.dumps`` of its JSON + the tensor's bytes). Goals: HTTP <= 3x, and binary HTTP
  / JSON HTTP <= 0.1x.

Request bodies are encoded once; the timed region is the HTTP round trip only (send the
bytes on a keep-alive ``httpx.Client``, read the whole response, no parsing). A binary
response is read as ``torchlab_client`` reads one: streamed into one buffer of its length
(httpx's ``read()`` joins its 64 KiB pieces: 10.0 ms against 8.2 ms for this 4 MB round
trip, alternated in one run on 2 cores). The binary
body is also sent to :func:`echo_app` (a raw ASGI app answering the body it received,
under the same uvicorn): the floor of any HTTP transport of those bytes with this server
and client; and the same echo is read by the standard library's ``http.client`` into one
buffer (:func:`echo_stdlib`): the floor with the least a Python client does. And the
same bytes go to :func:`tcp_echo_server`, a process of its own answering them over a plain
TCP socket (:func:`tcp_echo`: no HTTP at all, each side copying the bytes once): the floor
of any transport between two processes on this host's loopback.
And it is sent to the app itself in this process, through its ASGI interface (the body in
64 KiB messages, as uvicorn hands it over; the response's pieces joined): what the service
costs without HTTP (printed, no goal).

    .venv/bin/python bench/transport.py [--rows 1000 --cols 1000] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import multiprocessing
import socket
import statistics
import time
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np
import orjson
import torch
from _asgi import http_scope, lifespan, through_app
from _common import (
    Server,
    base_parser,
    environment,
    print_paired_ratio,
    print_ratio,
    print_table,
    section,
    summarize,
    write_json,
)
from uvicorn.importer import import_from_string

GOALS = {"json": 1.5, "b64": 3.0, "binary": 3.0}
BINARY_VS_JSON_GOAL = 0.1
STEPS = [{"op": "clone", "x": "a"}]
FRAME = "Inference-Header-Content-Length"
FORMS = ["json", "b64", "binary"]
JSON_HEADERS = {"content-type": "application/json"}


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with its own body: the pieces it came in, sent back as they
    are (no copy: joining them and slicing the result into pieces copied the body twice,
    about 3 ms of a 4 MB round trip on 2 cores)."""
    if scope["type"] != "http":
        return
    pieces = []
    while True:
        message = await receive()
        if message.get("body"):
            pieces.append(message["body"])
        if not message.get("more_body"):
            break
    length = str(sum(map(len, pieces))).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
    )
    for index, piece in enumerate(pieces):
        more = index < len(pieces) - 1
        await send({"type": "http.response.body", "body": piece, "more_body": more})
    if not pieces:
        await send({"type": "http.response.body", "body": b""})


async def _asgi_times(
    app: Any, path: str, query: bytes, body: bytes, headers: dict[str, str], repeats: int
) -> list[float]:
    """Round trips of ``body`` through ``app``'s ASGI interface (in 64 KiB messages, as
    uvicorn hands a body over), between its lifespan's startup and shutdown; the first,
    untimed, warms up."""
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    scope = http_scope("POST", path, raw, query)
    step = 64 * 1024
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    times = []
    async with lifespan(app):
        for _ in range(repeats + 1):
            start = time.perf_counter()
            status, answer = await through_app(app, scope, pieces)
            times.append(time.perf_counter() - start)
            if status != 200:
                raise SystemExit(f"through the app: HTTP {status}: {answer[:500]!r}")
    return times[1:]


def make_bodies(array: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The three request bodies and their headers, encoded once."""
    as_json = {"inputs": {"a": array}, "steps": STEPS}
    raw = array.astype("<f4").tobytes()
    as_b64 = {
        "inputs": {
            "a": {
                "b64": base64.b64encode(raw).decode("ascii"),
                "shape": list(array.shape),
                "dtype": "float32",
            }
        },
        "steps": STEPS,
    }
    tensor = {"shape": list(array.shape), "dtype": "float32", "binary_data_size": len(raw)}
    head = orjson.dumps({"inputs": {"a": tensor}, "steps": STEPS})
    return {
        "json": (orjson.dumps(as_json, option=orjson.OPT_SERIALIZE_NUMPY), JSON_HEADERS),
        "b64": (orjson.dumps(as_b64), JSON_HEADERS),
        "binary": (head + raw, {FRAME: str(len(head))}),
    }


def in_process_json(body: bytes, headers: dict[str, str]) -> bytes:
    request = orjson.loads(body)
    array = np.array(request["inputs"]["a"], dtype=np.float32)
    response = {
        "outputs": {"out": {"shape": list(array.shape), "dtype": "float32", "data": array}},
        "device": "cpu",
        "elapsed_ms": 0.0,
    }
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def in_process_b64(body: bytes, headers: dict[str, str]) -> bytes:
    request = orjson.loads(body)
    tensor = request["inputs"]["a"]
    array = np.frombuffer(base64.b64decode(tensor["b64"]), dtype="<f4").reshape(tensor["shape"])
    response = {
        "outputs": {
            "out": {
                "shape": list(array.shape),
                "dtype": "float32",
                "b64": base64.b64encode(array.tobytes()).decode("ascii"),
            }
        },
        "device": "cpu",
        "elapsed_ms": 0.0,
    }
    return orjson.dumps(response)


def in_process_binary(body: bytes, headers: dict[str, str]) -> bytes:
    """bytes -> tensor -> bytes: the JSON part parsed, the tensor a view of the body, the
    identity step, the framed answer."""
    length = int(headers[FRAME])
    wire = orjson.loads(body[:length])["inputs"]["a"]
    buffer = bytearray(body)  # the server, too, reads the body into a writable buffer
    tensor = torch.frombuffer(buffer, dtype=torch.float32, offset=length).reshape(wire["shape"])
    out = tensor.clone()
    answer = {"shape": list(out.shape), "dtype": "float32", "binary_data_size": out.nbytes}
    head = orjson.dumps({"outputs": {"out": answer}, "device": "cpu", "elapsed_ms": 0.0})
    return head + out.numpy().tobytes()


BASELINES = {"json": in_process_json, "b64": in_process_b64, "binary": in_process_binary}


class Answer:
    """A response read whole: its status, headers and body."""

    def __init__(
        self, status_code: int, headers: httpx.Headers, content: bytes | bytearray
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


def post(client: httpx.Client, form: str, url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """One round trip; a binary answer streamed into one buffer of its length, as
    ``torchlab_client`` reads one (its ``AnswerBuffer``), any other read by httpx."""
    if form != "binary":
        response = client.post(url, content=body, headers=headers)
        return Answer(response.status_code, response.headers, response.content)
    with client.stream("POST", url, content=body, headers=headers) as response:
        content = bytearray(int(response.headers["content-length"]))
        view = memoryview(content)
        filled = 0
        for chunk in response.iter_bytes():
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return Answer(response.status_code, response.headers, content)


def echo_stdlib(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> None:
    """The round trip of ``body`` to the echo app by the standard library's ``http.client``
    on a keep-alive connection, the answer read into one buffer of its length: the least a
    Python client does for it."""
    conn.request("POST", "/", body=body, headers=headers)
    response = conn.getresponse()
    view = memoryview(bytearray(int(response.getheader("content-length", "0"))))
    done = 0
    while done < len(view):
        read = response.readinto(view[done:])
        if not read:
            raise SystemExit("the echo's answer ended early")
        done += read


LENGTH = 8
"""Bytes of the length prefix that :func:`tcp_echo` sends before a body."""


def tcp_echo_server(listener: socket.socket) -> None:
    """Answers each length-prefixed body on one connection with the body itself, read into
    one buffer and sent back whole: the least any transport between processes does."""
    with listener, listener.accept()[0] as conn, conn.makefile("rb") as reader:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while head := _read_exactly(reader, LENGTH):
            conn.sendall(_read_exactly(reader, int.from_bytes(head, "little")))


def _read_exactly(reader: BinaryIO, size: int) -> bytearray:
    """``size`` bytes into one buffer (a buffered reader fills it, reading into it directly
    where it is large); empty if the peer closed first."""
    buffer = bytearray(size)
    return buffer if reader.readinto(buffer) == size else bytearray()


def tcp_echo(conn: socket.socket, reader: BinaryIO, body: bytes) -> None:
    """The round trip of ``body`` through :func:`tcp_echo_server`."""
    conn.sendall(len(body).to_bytes(LENGTH, "little"))
    conn.sendall(body)
    if len(_read_exactly(reader, len(body))) != len(body):
        raise SystemExit("the TCP echo ended early")


def tcp_floor_times(body: bytes, headers: dict[str, str], repeats: int) -> list[float]:
    """:func:`tcp_echo` round trips of ``body`` to a server process of its own, each after
    the in-process baseline (untimed), as each request to the service is; one untimed first."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        server = multiprocessing.get_context("spawn").Process(
            target=tcp_echo_server, args=(listener,), daemon=True
        )
        server.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=120.0) as conn,
            conn.makefile("rb") as reader,
        ):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tcp_echo(conn, reader, body)
            times = []
            for _ in range(repeats):
                BASELINES["binary"](body, headers)
                start = time.perf_counter()
                tcp_echo(conn, reader, body)
                times.append(time.perf_counter() - start)
        server.join(timeout=10)
    return times


def decode_response(form: str, response: Answer) -> np.ndarray:
    content = response.content
    if form == "binary":
        length = int(response.headers[FRAME])
        out = orjson.loads(content[:length])["outputs"]["out"]
        return np.frombuffer(content[length:], dtype="<f4").reshape(out["shape"])
    out = orjson.loads(content)["outputs"]["out"]
    if form == "json":
        return np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    return np.frombuffer(base64.b64decode(out["b64"]), dtype="<f4").reshape(out["shape"])


def elapsed_ms(form: str, response: Answer) -> float:
    content = response.content
    if form == "binary":
        content = content[: int(response.headers[FRAME])]
    return float(orjson.loads(content)["elapsed_ms"])


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--rows", type=int, default=1000, help="tensor rows (default 1000)")
    parser.add_argument("--cols", type=int, default=1000, help="tensor columns (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--app", default="service.main:app", help="ASGI app to serve (default service.main:app)"
    )
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=FORMS, help="wire forms")
    args = parser.parse_args()

    array = np.random.default_rng(args.seed).standard_normal((args.rows, args.cols))
    array = array.astype(np.float32)
    bodies = make_bodies(array)
    print(f"tensor float32 {list(array.shape)} ({array.size:,} elements)")
    for form in args.forms:
        print(f"  {form} request body: {len(bodies[form][0]) / 1e6:.2f} MB")

    results: dict[str, Any] = {
        "env": environment(),
        "app": args.app,
        "shape": list(array.shape),
        "repeats": args.repeats,
        "forms": {},
    }
    with Server(args.app) as server, httpx.Client(base_url=server.url, timeout=120.0) as client:
        for form in args.forms:
            url = "/tensor/ops" + ("" if form == "json" else f"?encoding={form}")
            body, headers = bodies[form]
            baseline = BASELINES[form]
            # Correctness once, outside the timed region (also the warm-up of both sides).
            reply = baseline(body, headers)
            check = post(client, form, url, body, headers)
            if check.status_code != 200:
                raise SystemExit(f"{form}: HTTP {check.status_code}: {check.content[:500]!r}")
            same = bool(np.array_equal(decode_response(form, check), array))
            # Alternate in-process and HTTP runs so that load from elsewhere on the machine
            # hits both alike. The server is idle while the baseline runs, and vice versa.
            local_times: list[float] = []
            http_times: list[float] = []
            statuses: list[int] = []
            elapsed: list[float] = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                baseline(body, headers)
                local_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                response = post(client, form, url, body, headers)
                http_times.append(time.perf_counter() - start)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    elapsed.append(elapsed_ms(form, response))
            results["forms"][form] = {
                "request_bytes": len(body),
                "response_bytes": len(check.content),
                "in_process_response_bytes": len(reply),
                "in_process": summarize(local_times),
                "http": summarize(http_times),
                "server_elapsed_ms": statistics.median(elapsed or [elapsed_ms(form, check)]),
                "round_trip_equal": same,
                "non_200": sum(s != 200 for s in statuses),
            }

    if "binary" in args.forms:
        bench_dir = str(Path(__file__).resolve().parent)
        body, headers = bodies["binary"]
        with (
            Server("transport:echo_app", env={"PYTHONPATH": bench_dir}) as echo,
            httpx.Client(base_url=echo.url, timeout=120.0) as client,
            closing(http.client.HTTPConnection("127.0.0.1", echo.port, timeout=120.0)) as conn,
        ):
            post(client, "binary", "/", body, headers)
            times, stdlib_times = [], []
            for _ in range(args.repeats):
                # after the baseline, untimed, as each request to the service is
                BASELINES["binary"](body, headers)
                start = time.perf_counter()
                post(client, "binary", "/", body, headers)
                times.append(time.perf_counter() - start)
                BASELINES["binary"](body, headers)
                start = time.perf_counter()
                echo_stdlib(conn, body, headers)
                stdlib_times.append(time.perf_counter() - start)
        results["binary_echo_floor"] = summarize(times)
        results["binary_echo_floor_stdlib"] = summarize(stdlib_times)
        results["binary_tcp_floor"] = summarize(tcp_floor_times(body, headers, args.repeats))
        app = import_from_string(args.app)
        query = b"encoding=binary"
        times = asyncio.run(_asgi_times(app, "/tensor/ops", query, body, headers, args.repeats))
        results["binary_asgi"] = summarize(times)

    with section(f"results (median of {args.repeats}, milliseconds)"):
        rows = []
        for form, entry in results["forms"].items():
            http_ms = entry["http"]["median_s"] * 1e3
            base_ms = entry["in_process"]["median_s"] * 1e3
            rows.append(
                [
                    form,
                    f"{entry['request_bytes'] / 1e6:.2f}",
                    f"{entry['response_bytes'] / 1e6:.2f}",
                    f"{base_ms:.2f}",
                    f"{http_ms:.2f}",
                    f"{entry['http']['min_s'] * 1e3:.2f}",
                    f"{entry['server_elapsed_ms']:.2f}",
                    "yes" if entry["round_trip_equal"] else "NO",
                ]
            )
        print_table(
            [
                "form",
                "req MB",
                "resp MB",
                "in-process ms",
                "HTTP ms",
                "HTTP min ms",
                "op ms",
                "equal",
            ],
            rows,
        )
    print()
    results["ratios"] = []
    forms = results["forms"]
    for form, entry in forms.items():
        name = f"{form} HTTP / {form} in-process"
        results["ratios"].append(
            print_paired_ratio(name, entry["http"], entry["in_process"], GOALS[form], "lower")
        )
        if not entry["round_trip_equal"] or entry["non_200"]:
            print(f"  WARNING {form}: equal={entry['round_trip_equal']} non_200={entry['non_200']}")
    if "binary" in forms:
        binary_base = forms["binary"]["in_process"]["median_s"]
    if "binary_echo_floor" in results:
        floor = results["binary_echo_floor"]["median_s"]
        print(
            f"binary floor: the same bytes echoed by a bare ASGI app under the same uvicorn "
            f"took {floor * 1e3:.2f} ms ({floor / binary_base:.2f}x "
            "the in-process baseline; no goal)"
        )
        service = forms["binary"]["http"]["median_s"]
        results["binary_over_floor"] = service / floor
        print(
            f"binary HTTP / binary floor: {service / floor:.2f}x (what the service adds to the "
            "bytes' own round trip; no goal)"
        )
    if "binary_echo_floor_stdlib" in results:
        floor = results["binary_echo_floor_stdlib"]["median_s"]
        print(
            f"binary floor, client side lean: the same echo read by the standard library's "
            f"http.client into one buffer took {floor * 1e3:.2f} ms "
            f"({floor / binary_base:.2f}x; no goal)"
        )
    if "binary_tcp_floor" in results:
        floor = results["binary_tcp_floor"]["median_s"]
        print(
            f"binary floor, no HTTP: the same bytes echoed over a plain TCP socket by a process "
            f"of its own took {floor * 1e3:.2f} ms "
            f"({floor / binary_base:.2f}x; no goal)"
        )
    if "binary_asgi" in results:
        through = results["binary_asgi"]["median_s"]
        print(
            f"binary through the app in this process (ASGI, no HTTP): {through * 1e3:.2f} ms "
            f"({through / binary_base:.2f}x the in-process "
            "baseline; no goal)"
        )
    if "binary" in forms and "json" in forms:
        ratio = forms["binary"]["http"]["median_s"] / forms["json"]["http"]["median_s"]
        results["ratios"].append(
            print_ratio("binary HTTP / JSON HTTP", ratio, BINARY_VS_JSON_GOAL, "lower")
        )
    write_json(args.json, results)


if __name__ == "__main__":
    main()
