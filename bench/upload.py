"""Request bodies: how long a large body takes to reach the app, through the service's
protocol against uvicorn's own.

A body of ``--mb`` MB (default 4) is POSTed on a keep-alive ``httpx.Client`` (as
``torchlab_client`` sends a binary body) to :func:`count_app`, a raw ASGI app that reads the
body to its end and answers its length: nothing is done with the bytes, so the time is the
body's way from the socket to the app. The app is served twice, by the same uvicorn with
uvloop: with ``--http httptools`` (uvicorn's protocol, which appends each piece the parser
makes to a ``bytearray`` and copies that into a new ``bytes`` for every message) and with
``--http service.protocol:HeadTimedProtocol`` (the service's, as ``make serve`` runs it,
which hands the parser's pieces over as they are). The two servers take turns, ``--repeats``
rounds of ``--requests`` each; the median of each side counts. The time moves from run to
run with the allocator's state (whether the servers' buffers are pages it maps afresh),
by up to a third on a 2-core VM: compare sides of one run.

Goal: service protocol / httptools <= 0.7x (0.39x to 0.65x across runs on 2 cores).

    .venv/bin/python bench/upload.py [--mb 4] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from _common import Server, base_parser, environment, print_ratio, print_table, section, write_json

GOAL = 0.7
PROTOCOLS = {"httptools": "httptools", "service": "service.protocol:HeadTimedProtocol"}


async def count_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body to its end and answers how many bytes it had, and in how many
    messages."""
    if scope["type"] != "http":
        return
    size = messages = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        messages += 1
        if not message.get("more_body"):
            break
    body = b'{"bytes": %d, "messages": %d}' % (size, messages)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def time_posts(client: httpx.Client, body: bytes, requests: int) -> list[float]:
    """``requests`` uploads of ``body``, each checked (the app saw every byte)."""
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.post("/", content=body)
        times.append(time.perf_counter() - start)
        if response.status_code != 200 or response.json()["bytes"] != len(body):
            raise SystemExit(f"the app did not get the body: {response.text[:200]}")
    return times


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--mb", type=float, default=4.0, help="body size in MB (default 4)")
    parser.add_argument("--requests", type=int, default=10, help="uploads per round (10)")
    args = parser.parse_args()

    body = os.urandom(int(args.mb * 1e6))
    bench_dir = str(Path(__file__).resolve().parent)
    results: dict[str, Any] = {"env": environment(), "bytes": len(body), "sides": {}}
    times: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    messages: dict[str, int] = {}
    with (
        Server(
            "upload:count_app", env={"PYTHONPATH": bench_dir}, http=PROTOCOLS["httptools"]
        ) as plain,
        Server(
            "upload:count_app", env={"PYTHONPATH": bench_dir}, http=PROTOCOLS["service"]
        ) as ours,
    ):
        clients = {
            name: httpx.Client(base_url=server.url, timeout=60.0)
            for name, server in (("httptools", plain), ("service", ours))
        }
        try:
            for name, client in clients.items():  # warm-up, untimed
                time_posts(client, body, args.requests)
                messages[name] = client.post("/", content=body).json()["messages"]
            for _ in range(args.repeats):
                for name, client in clients.items():
                    times[name].extend(time_posts(client, body, args.requests))
        finally:
            for client in clients.values():
                client.close()

    medians = {name: statistics.median(values) for name, values in times.items()}
    with section(f"results (median of {args.repeats} x {args.requests}, milliseconds)"):
        rows = [
            [name, protocol, f"{medians[name] * 1e3:.2f}", str(messages[name])]
            for name, protocol in PROTOCOLS.items()
        ]
        print_table(["side", "--http", "body ms", "messages"], rows)
    for name, protocol in PROTOCOLS.items():
        results["sides"][name] = {
            "protocol": protocol,
            "messages": messages[name],
            "times_s": times[name],
        }
    print()
    ratio = medians["service"] / medians["httptools"]
    results["ratios"] = [
        print_ratio(f"{args.mb:g} MB body, service protocol / httptools", ratio, GOAL, "lower")
    ]
    write_json(args.json, results)


if __name__ == "__main__":
    main()
