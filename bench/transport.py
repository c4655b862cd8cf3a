"""Transport cost: a float32 tensor through an identity step (``clone``) over HTTP.

Two wire forms, each against an in-process baseline that does the same decoding and
encoding work without HTTP, the framework or torch:

* JSON (nested list): ``orjson.loads`` -> ``np.array(float32)`` -> ``orjson.dumps`` of the
  response envelope with the array (``OPT_SERIALIZE_NUMPY``). Goal: HTTP <= 1.5x.
* b64 (``{"b64", "shape", "dtype"}`` + ``?encoding=b64``): ``orjson.loads`` ->
  ``base64.b64decode`` -> ``np.frombuffer`` -> ``base64.b64encode`` -> ``orjson.dumps`` of
  the envelope. Goal: HTTP <= 3x.

Request bodies are encoded once; the timed region is the HTTP round trip only (send the
bytes on a keep-alive ``httpx.Client``, read the whole response, no parsing).

    .venv/bin/python bench/transport.py [--rows 1000 --cols 1000] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import numpy as np
import orjson
from _common import (
    Server,
    base_parser,
    environment,
    print_ratio,
    print_table,
    section,
    summarize,
    write_json,
)

GOALS = {"json": 1.5, "b64": 3.0}
STEPS = [{"op": "clone", "x": "a"}]


def make_bodies(array: np.ndarray) -> dict[str, bytes]:
    """The two request bodies, encoded once."""
    as_json = {"inputs": {"a": array}, "steps": STEPS}
    as_b64 = {
        "inputs": {
            "a": {
                "b64": base64.b64encode(array.astype("<f4").tobytes()).decode("ascii"),
                "shape": list(array.shape),
                "dtype": "float32",
            }
        },
        "steps": STEPS,
    }
    return {
        "json": orjson.dumps(as_json, option=orjson.OPT_SERIALIZE_NUMPY),
        "b64": orjson.dumps(as_b64),
    }


def in_process_json(body: bytes) -> bytes:
    request = orjson.loads(body)
    array = np.array(request["inputs"]["a"], dtype=np.float32)
    response = {
        "outputs": {"out": {"shape": list(array.shape), "dtype": "float32", "data": array}},
        "device": "cpu",
        "elapsed_ms": 0.0,
    }
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def in_process_b64(body: bytes) -> bytes:
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


BASELINES = {"json": in_process_json, "b64": in_process_b64}


def decode_response(form: str, content: bytes) -> np.ndarray:
    out = orjson.loads(content)["outputs"]["out"]
    if form == "json":
        return np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    return np.frombuffer(base64.b64decode(out["b64"]), dtype="<f4").reshape(out["shape"])


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--rows", type=int, default=1000, help="tensor rows (default 1000)")
    parser.add_argument("--cols", type=int, default=1000, help="tensor columns (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--app", default="service.main:app", help="ASGI app to serve (default service.main:app)"
    )
    parser.add_argument(
        "--forms", nargs="+", choices=["json", "b64"], default=["json", "b64"], help="wire forms"
    )
    args = parser.parse_args()

    array = np.random.default_rng(args.seed).standard_normal((args.rows, args.cols))
    array = array.astype(np.float32)
    bodies = make_bodies(array)
    print(f"tensor float32 {list(array.shape)} ({array.size:,} elements)")
    for form in args.forms:
        print(f"  {form} request body: {len(bodies[form]) / 1e6:.2f} MB")

    results: dict[str, Any] = {
        "env": environment(),
        "app": args.app,
        "shape": list(array.shape),
        "repeats": args.repeats,
        "forms": {},
    }
    with Server(args.app) as server, httpx.Client(base_url=server.url, timeout=120.0) as client:
        headers = {"content-type": "application/json"}
        for form in args.forms:
            url = "/tensor/ops" + ("?encoding=b64" if form == "b64" else "")
            body = bodies[form]
            baseline = BASELINES[form]
            # Correctness once, outside the timed region (also the warm-up of both sides).
            reply = baseline(body)
            check = client.post(url, content=body, headers=headers)
            if check.status_code != 200:
                raise SystemExit(f"{form}: HTTP {check.status_code}: {check.text[:500]}")
            same = bool(np.array_equal(decode_response(form, check.content), array))
            # Alternate in-process and HTTP runs so that load from elsewhere on the machine
            # hits both alike. The server is idle while the baseline runs, and vice versa.
            local_times: list[float] = []
            http_times: list[float] = []
            statuses: list[int] = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                baseline(body)
                local_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                response = client.post(url, content=body, headers=headers)
                response.read()
                http_times.append(time.perf_counter() - start)
                statuses.append(response.status_code)
            results["forms"][form] = {
                "request_bytes": len(body),
                "response_bytes": len(check.content),
                "in_process_response_bytes": len(reply),
                "in_process": summarize(local_times),
                "http": summarize(http_times),
                "server_elapsed_ms": orjson.loads(check.content)["elapsed_ms"],
                "round_trip_equal": same,
                "non_200": sum(s != 200 for s in statuses),
            }

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
                    f"{base_ms:.1f}",
                    f"{http_ms:.1f}",
                    f"{entry['http']['min_s'] * 1e3:.1f}",
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
    for form, entry in results["forms"].items():
        ratio = entry["http"]["median_s"] / entry["in_process"]["median_s"]
        results["ratios"].append(
            print_ratio(f"{form} HTTP / {form} in-process", ratio, GOALS[form], "lower")
        )
        if not entry["round_trip_equal"] or entry["non_200"]:
            print(f"  WARNING {form}: equal={entry['round_trip_equal']} non_200={entry['non_200']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
