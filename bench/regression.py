"""Regression fits over HTTP against scikit-learn in this process.

* linear: ``POST /regress/linear`` (``lstsq``) of a float64 20000×40 problem through the
  Python client (``torchlab_client.Client.linear_regression``: the arrays go as raw bytes
  in the binary framing, the call returns the fitted model), against
  ``LinearRegression().fit`` on the same arrays. Goal: client / scikit-learn <= 1.5x. The
  same fit with a prepared b64 JSON body over plain HTTP is printed beside it.
* logistic: ``POST /regress/logistic`` (L-BFGS, the default) of a 20000×20 binary problem
  (``make_classification``), against ``LogisticRegression(solver="lbfgs").fit``. Both train
  on the same 80% and are scored on the same held-out 20% (the service's model is applied
  here, from the JSON it returned), with matching regularisation (C = 1 is
  l2 = 1 / n_train). Goal: HTTP <= 1.5x, test accuracies within 0.5 point.

The client's call is timed whole (encoding the arrays, the round trip, reading the model);
the other request bodies are encoded once and only their HTTP round trip is timed (send the
bytes on a keep-alive ``httpx.Client``, read the whole response). Fits in-process and over HTTP
alternate, so that load from elsewhere on the machine hits both alike, each after a short
untimed pause (``SETTLE_S``) that lets the other side's worker threads go idle. Each fit is
timed two ways, and each ratio printed for both:

* after idle: every timed call follows the pause, so each process it crosses (this one; the
  client's, the server's and its worker's) starts on a cold core. On a small VM a core idle
  for 0.2 s runs the same fit about 1.7 times slower (no page faults: caches and frequency).
* warm: the pause, then a burst of ``BURST`` calls back to back, the first untimed: each
  side at its steady pace, as for a caller that fits repeatedly.

    .venv/bin/python bench/regression.py [--rows 20000] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import base64
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson
from _common import (
    ROOT,
    Server,
    base_parser,
    environment,
    print_paired_ratio,
    print_table,
    section,
    summarize,
    write_json,
)
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

sys.path.insert(0, str(ROOT / "clients" / "python"))  # the client of this source tree
import torchlab_client as tl

TIME_GOAL = 1.5
ACCURACY_GOAL = 0.005
SETTLE_S = 0.2
"""Untimed pause before each timed call (or burst): the other side's BLAS and OpenMP worker
threads spin for a while after their last task, and on a small machine they would steal the
cores from the call being timed."""
BURST = 5
"""Calls per burst when timed warm (the first untimed)."""


def b64(array: np.ndarray, dtype: str) -> dict[str, Any]:
    """A tensor in the wire's b64 form."""
    numpy_dtype = {"float64": "<f8", "int64": "<i8"}[dtype]
    data = np.ascontiguousarray(array, dtype=numpy_dtype)
    return {
        "b64": base64.b64encode(data.tobytes()).decode("ascii"),
        "shape": list(data.shape),
        "dtype": dtype,
    }


def linear_case(rows: int, cols: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols))
    y = x @ rng.standard_normal(cols) + 0.1 * rng.standard_normal(rows) + 2.0
    body = orjson.dumps({"x": b64(x, "float64"), "y": b64(y, "float64")})
    return {"x": x, "y": y, "body": body}


def logistic_case(rows: int, cols: int, seed: int) -> dict[str, Any]:
    x, y = make_classification(
        n_samples=rows, n_features=cols, n_informative=10, n_redundant=4, random_state=seed
    )
    order = np.random.default_rng(seed).permutation(rows)
    n_test = rows // 5
    test, train = order[:n_test], order[n_test:]
    l2 = 1.0 / len(train)  # scikit-learn's C = 1
    body = orjson.dumps({"x": b64(x[train], "float64"), "y": b64(y[train], "int64"), "l2": l2})
    return {"x": x, "y": y, "train": train, "test": test, "body": body}


def service_accuracy(model: dict[str, Any], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a binary logistic model as the service returned it, applied here."""
    scaler = model["scaler"]
    if scaler is not None:
        x = (x - np.array(scaler["mean"])) / np.array(scaler["scale"])
    logits = x @ np.array(model["coef"]) + model["intercept"]
    positive = 1 / (1 + np.exp(-logits)) > model["threshold"]
    predicted = np.array(model["classes"])[positive.astype(int)]
    return float(np.mean(predicted == y))


def server_ms(answer: Any) -> float:
    """The compute time the service reported in ``answer`` (a response, or the client's
    result), read after the call's timing."""
    if isinstance(answer, httpx.Response):
        return float(orjson.loads(answer.content)["elapsed_ms"])
    return float(answer.elapsed_ms)


def alternate(
    local: Callable[[], object], remote: Callable[[], Any], repeats: int, burst: int = 1
) -> tuple[list[float], list[float], list[int], list[float]]:
    """``repeats`` rounds of: pause, ``local`` ``burst`` times; pause, ``remote`` as often.
    A burst of more than one leaves its first call untimed. Also returns the server's
    ``elapsed_ms`` of each timed remote call."""
    local_times: list[float] = []
    http_times: list[float] = []
    statuses: list[int] = []
    elapsed: list[float] = []
    for _ in range(repeats):
        for fn, times in ((local, local_times), (remote, http_times)):
            time.sleep(SETTLE_S)
            for call in range(burst):
                start = time.perf_counter()
                response = fn()
                if isinstance(response, httpx.Response):
                    response.read()
                    statuses.append(response.status_code)
                elif fn is remote:
                    statuses.append(200)  # the client raises on anything else
                if burst == 1 or call > 0:
                    times.append(time.perf_counter() - start)
                    if fn is remote and statuses[-1] == 200:
                        elapsed.append(server_ms(response))
    return local_times, http_times, statuses, elapsed


def measure(local: Callable[[], object], remote: Callable[[], Any], repeats: int) -> dict:
    """The in-process and HTTP times after idle (``in_process``, ``http``) and warm, and
    the median of the server's compute times over every timed call."""
    idle_local, idle_http, statuses, idle_elapsed = alternate(local, remote, repeats)
    warm_local, warm_http, warm_statuses, warm_elapsed = alternate(local, remote, repeats, BURST)
    elapsed = idle_elapsed + warm_elapsed
    return {
        "in_process": summarize(idle_local),
        "http": summarize(idle_http),
        "warm": {"in_process": summarize(warm_local), "http": summarize(warm_http)},
        "non_200": sum(s != 200 for s in statuses + warm_statuses),
        "server_elapsed_ms": statistics.median(elapsed) if elapsed else float("nan"),
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--rows", type=int, default=20000, help="samples (default 20000)")
    parser.add_argument("--linear-cols", type=int, default=40, help="linear features (40)")
    parser.add_argument("--logistic-cols", type=int, default=20, help="logistic features (20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    linear = linear_case(args.rows, args.linear_cols, args.seed)
    logistic = logistic_case(args.rows, args.logistic_cols, args.seed)
    print(
        f"linear   float64 [{args.rows}, {args.linear_cols}]: "
        f"body {len(linear['body']) / 1e6:.2f} MB"
    )
    print(
        f"logistic float64 [{args.rows}, {args.logistic_cols}] binary, 80/20 split: "
        f"body {len(logistic['body']) / 1e6:.2f} MB"
    )
    x_train, y_train = logistic["x"][logistic["train"]], logistic["y"][logistic["train"]]
    x_test, y_test = logistic["x"][logistic["test"]], logistic["y"][logistic["test"]]

    results: dict[str, Any] = {"env": environment(), "rows": args.rows, "repeats": args.repeats}
    headers = {"content-type": "application/json"}
    with (
        Server() as server,
        httpx.Client(base_url=server.url, timeout=120.0) as client,
        tl.Client(server.url, timeout=120.0, retries=0) as torchlab,
    ):

        def post(path: str, body: bytes) -> Callable[[], httpx.Response]:
            return lambda: client.post(path, content=body, headers=headers)

        # linear through the client: correctness once (also the warm-up), then timed.
        reference = LinearRegression().fit(linear["x"], linear["y"])
        fit = torchlab.linear_regression(linear["x"], linear["y"])
        coef_diff = float(np.max(np.abs(np.asarray(fit.model.coef) - reference.coef_)))
        results["linear"] = {
            "request_bytes": linear["x"].nbytes + linear["y"].nbytes,
            **measure(
                lambda: LinearRegression().fit(linear["x"], linear["y"]),
                lambda: torchlab.linear_regression(linear["x"], linear["y"]),
                args.repeats,
            ),
            "max_coef_abs_diff": coef_diff,
        }

        # the same fit, a prepared b64 JSON body over plain HTTP
        check = post("/regress/linear", linear["body"])()
        if check.status_code != 200:
            raise SystemExit(f"linear b64: HTTP {check.status_code}: {check.text[:500]}")
        results["linear_b64"] = {
            "request_bytes": len(linear["body"]),
            **measure(
                lambda: LinearRegression().fit(linear["x"], linear["y"]),
                post("/regress/linear", linear["body"]),
                args.repeats,
            ),
        }

        # logistic
        def sklearn_fit() -> LogisticRegression:
            return LogisticRegression(solver="lbfgs").fit(x_train, y_train)

        baseline = sklearn_fit()
        check = post("/regress/logistic", logistic["body"])()
        if check.status_code != 200:
            raise SystemExit(f"logistic: HTTP {check.status_code}: {check.text[:500]}")
        fitted = orjson.loads(check.content)
        results["logistic"] = {
            "request_bytes": len(logistic["body"]),
            **measure(sklearn_fit, post("/regress/logistic", logistic["body"]), args.repeats),
            "sklearn_iterations": int(baseline.n_iter_[0]),
            "service_epochs": fitted["epochs"],
            "sklearn_test_accuracy": float(baseline.score(x_test, y_test)),
            "service_test_accuracy": service_accuracy(fitted["model"], x_test, y_test),
        }

    warm_count = args.repeats * (BURST - 1)
    with section(
        f"results (medians of {args.repeats} after idle and {warm_count} warm, milliseconds)"
    ):
        rows = []
        for name in ("linear", "linear_b64", "logistic"):
            entry = results[name]
            rows.append(
                [
                    name,
                    f"{entry['request_bytes'] / 1e6:.2f}",
                    f"{entry['in_process']['median_s'] * 1e3:.1f}",
                    f"{entry['http']['median_s'] * 1e3:.1f}",
                    f"{entry['warm']['in_process']['median_s'] * 1e3:.1f}",
                    f"{entry['warm']['http']['median_s'] * 1e3:.1f}",
                    f"{entry['server_elapsed_ms']:.1f}",
                ]
            )
        print_table(
            [
                "fit",
                "req MB",
                "sklearn idle",
                "HTTP idle",
                "sklearn warm",
                "HTTP warm",
                "server fit ms (median)",
            ],
            rows,
        )
        entry = results["logistic"]
        print(
            f"\nlogistic test accuracy: scikit-learn {entry['sklearn_test_accuracy']:.4f} "
            f"({entry['sklearn_iterations']} iterations), torchlab "
            f"{entry['service_test_accuracy']:.4f} ({entry['service_epochs']} epochs)"
        )
        print(
            "linear max |coef difference| vs scikit-learn: "
            f"{results['linear']['max_coef_abs_diff']:.2e}"
        )
    print()
    results["ratios"] = []
    labels = {
        "linear": "linear client (binary) / scikit-learn in-process",
        "linear_b64": "linear b64 HTTP / scikit-learn in-process",
        "logistic": "logistic HTTP / scikit-learn in-process",
    }
    for name in ("linear", "linear_b64", "logistic"):
        entry = results[name]
        for mode, times in (("after idle", entry), ("warm", entry["warm"])):
            label = f"{labels[name]}, {mode}"
            if name == "linear_b64":  # beside the client's, no goal of its own
                ratio = times["http"]["median_s"] / times["in_process"]["median_s"]
                print(f"{label}: {ratio:.3f}x (no goal)")
                continue
            results["ratios"].append(
                print_paired_ratio(label, times["http"], times["in_process"], TIME_GOAL, "lower")
            )
        if entry["non_200"]:
            print(f"  WARNING {name}: {entry['non_200']} answers were not 200")
    entry = results["logistic"]
    gap = abs(entry["service_test_accuracy"] - entry["sklearn_test_accuracy"])
    status = "PASS" if gap <= ACCURACY_GOAL else "MISS"
    print(f"ACCURACY logistic test accuracy gap: {gap * 100:.2f} points  (goal <= 0.5)  {status}")
    results["accuracy_gap"] = {"gap": gap, "goal": ACCURACY_GOAL, "status": status}
    write_json(args.json, results)


if __name__ == "__main__":
    main()
