"""torchlab on Ray Serve (``deploy/ray/``): the config files are valid Serve configs, and on a
local Ray started here, two replicas of the app answer over HTTP under the service's own
limits, and a replica killed mid-run is replaced while requests keep succeeding.

Ray is an optional extra (``pip install -e '.[ray]'``; ``make test`` installs it): where it
is absent, the tests that need it are skipped, and the service must not import it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.config import Limits, Settings
from service.errors import ErrorCode
from tests.live import ROOT, free_port

CONFIGS = sorted((ROOT / "deploy" / "ray").glob("*.yaml"))
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="Ray is not installed (pip install -e '.[ray]'; make test installs it)"
)
REPLICA = "x-torchlab-replica"

TEST_ENV = {
    "TORCHLAB_LOG_LEVEL": "warning",
    # Compute in threads of the replica: no fork server importing torch beside each one,
    # so that a replica starts (and a killed one is replaced) in half the time.
    "TORCHLAB_ISOLATE": "false",
    "TORCHLAB_WORKER_THREADS": "1",
    "TORCHLAB_CALIBRATION": json.dumps({"cpu/float32": 1e11, "cpu/elements": 1e9}),
}
"""Settings the tests add to the config file's own."""


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def application(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = config["applications"]
    return dict(app)


def limits_of(env: dict[str, str]) -> Limits:
    """The limits a replica with the ``TORCHLAB_*`` variables ``env`` runs under."""
    values = {key.removeprefix("TORCHLAB_").lower(): value for key, value in env.items()}
    return Limits(**{name: value for name, value in values.items() if name in Limits.model_fields})


# --- without Ray running ------------------------------------------------------------------------


def test_the_service_never_imports_ray() -> None:
    code = "import sys, service.main; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_there_is_a_cpu_and_a_gpu_config() -> None:
    assert [path.name for path in CONFIGS] == ["torchlab-gpu.yaml", "torchlab.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_config_serves_the_app_with_the_services_settings(path: Path) -> None:
    app = application(load(path))
    assert app["import_path"] == "deploy.ray.app:app"
    assert app["route_prefix"] == "/"
    env = app["runtime_env"]["env_vars"]
    names = {f"TORCHLAB_{name.upper()}" for name in [*Settings.model_fields, *Limits.model_fields]}
    assert set(env) <= names, set(env) - names
    limits = limits_of(env)
    (deployment,) = app["deployments"]
    assert deployment["name"] == "torchlab"
    # Ray stops waiting on a replica only once the service would have answered.
    slowest = limits.queue_timeout_s + limits.request_timeout_s
    assert load(path)["http_options"]["request_timeout_s"] > slowest
    assert deployment["graceful_shutdown_timeout_s"] > slowest
    assert deployment["max_ongoing_requests"] >= limits.max_inflight_per_device
    scaling = deployment["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] <= scaling["initial_replicas"] <= scaling["max_replicas"]
    assert deployment["ray_actor_options"]["num_cpus"] >= 1
    assert deployment["health_check_period_s"] > 0


def test_the_gpu_config_gives_each_replica_a_gpu() -> None:
    app = application(load(ROOT / "deploy" / "ray" / "torchlab-gpu.yaml"))
    assert app["deployments"][0]["ray_actor_options"]["num_gpus"] == 1
    assert app["runtime_env"]["env_vars"]["TORCHLAB_DEVICE"] in {"auto", "cuda"}


@needs_ray
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_config_is_valid_for_ray_serve(path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema  # noqa: PLC0415

    ServeDeploySchema.model_validate(load(path))


# --- on a local Ray -----------------------------------------------------------------------------


class Served:
    def __init__(self, url: str, limits: Limits) -> None:
        self.url = url
        self.limits = limits


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The CPU config's application on a local Ray started here, with two replicas of half
    a CPU each (the config's other options kept)."""
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from deploy.ray.app import torchlab  # noqa: PLC0415

    app = application(load(ROOT / "deploy" / "ray" / "torchlab.yaml"))
    env = {**app["runtime_env"]["env_vars"], **TEST_ENV}
    (options,) = app["deployments"]
    options = {key: value for key, value in options.items() if key != "autoscaling_config"}
    options["num_replicas"] = 2
    options["ray_actor_options"] = {**options["ray_actor_options"], "num_cpus": 0.5}
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(
        address="local",  # a Ray of its own, whatever else runs on this machine
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 << 20,
        log_to_driver=False,
        runtime_env={"env_vars": {**env, "PYTHONPATH": path}},
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(torchlab.options(**options).bind(), name=app["name"], route_prefix="/")
        yield Served(f"http://127.0.0.1:{port}", limits_of(env))
    finally:
        serve.shutdown()
        ray.shutdown()


@needs_ray
@pytest.mark.slow
def test_both_replicas_answer_under_the_services_limits(served: Served) -> None:
    replicas: Counter[str] = Counter()
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for _ in range(30):
            response = client.post("/tensor/ops", json={"steps": [{"op": "arange", "end": 3}]})
            assert response.status_code == 200, response.text
            assert response.json()["outputs"]["out"]["data"] == [0, 1, 2]
            replicas[response.headers[REPLICA]] += 1
            assert len(response.headers.get_list("x-request-id")) == 1
        assert len(replicas) == 2, replicas

        info = client.get("/info").json()
        assert info["limits"]["max_inflight_per_device"] == served.limits.max_inflight_per_device
        assert info["limits"]["max_body_bytes"] == served.limits.max_body_bytes
        limit = served.limits.max_body_bytes
        response = client.post(
            "/tensor/ops",
            content=b" " * (limit + 1),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == ErrorCode.BODY_SIZE_LIMIT


def _post_with_retries(client: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, int]:
    """POST /tensor/ops, retried (3 times at most) on a lost connection, a 5xx or a 408, as a
    client of a replicated service does. (Ray Serve sends a request whose replica died to
    another one; when the dead one had already taken the body, the new one waits for a body
    that never comes and answers 408 at the body timeout, which HTTP lets a client repeat.)"""
    for attempt in range(4):
        try:
            response = client.post("/tensor/ops", json=body)
        except httpx.TransportError:
            if attempt == 3:
                raise
        else:
            if (response.status_code < 500 and response.status_code != 408) or attempt == 3:
                return response, attempt
        time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@needs_ray
@pytest.mark.slow
def test_a_killed_replica_is_replaced_while_requests_succeed(served: Served) -> None:
    import ray  # noqa: PLC0415

    body = {
        "steps": [
            {"op": "randn", "size": [128, 128], "seed": 0, "out": "a"},
            {"op": "matmul", "x": "a", "y": "a", "out": "b"},
            {"op": "sum", "x": "b"},
        ]
    }
    answered: Counter[str] = Counter()
    failures: list[str] = []
    retried = 0
    lock = threading.Lock()
    stop = threading.Event()

    def run() -> None:
        nonlocal retried
        with httpx.Client(base_url=served.url, timeout=60) as client:
            while not stop.is_set():
                try:
                    response, retries = _post_with_retries(client, body)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    retried += retries
                    if response.status_code == 200:
                        answered[response.headers[REPLICA]] += 1
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                stop.wait(0.02)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(answered) < 2:
            assert time.monotonic() < deadline, answered
            time.sleep(0.1)
        before = set(answered)
        victim = sorted(before)[0]
        (name,) = [
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith("SERVE_REPLICA::") and actor["name"].endswith(victim)
        ]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        killed_at = sum(answered.values())

        deadline = time.monotonic() + 120
        while not set(answered) - before:  # a new replica, started by Serve, answers
            assert time.monotonic() < deadline, f"no replica replaced {victim}: {answered}"
            time.sleep(0.2)
        with lock:
            during = sum(answered.values()) - killed_at
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == [], failures[:5]
    assert during > 0  # the other replica answered while the new one started
    survivor = (before - {victim}).pop()
    assert answered[survivor] > 0
