"""torchlab as a Ray Serve application: the service's own FastAPI app in every replica.

``serve run deploy/ray/torchlab.yaml`` (from the repository root, with ``pip install -e
'.[ray]'``) starts it on a local Ray, or on the cluster that ``RAY_ADDRESS`` names. The
config file sets the replicas (or their autoscaling bounds), each one's CPUs or GPUs, the
health checks and the graceful shutdown; the service's settings (``TORCHLAB_*``) come from
its ``runtime_env``, so that every limit of the service holds inside each replica: each
replica has its own compute slots (``max_inflight_per_device``), its own worker processes
and its own ``/metrics``.

Only this module imports Ray; the service never does.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from ray import serve
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.main import create_app

REPLICA_HEADER = "X-Torchlab-Replica"
"""Names the replica that answered a request (Ray Serve's id of it)."""
REQUEST_ID_HEADER = "X-Request-ID"

HEALTH_CHECK_TIMEOUT_S = 10.0


class ReplicaHeaderMiddleware:
    """Adds :data:`REPLICA_HEADER` to every response, and leaves its ``X-Request-ID`` to Ray
    Serve's proxy: the proxy gives every request one (the caller's, or its own, which the
    app keeps) and answers with it, so the app's copy would repeat the header."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.replica = replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[REPLICA_HEADER] = self.replica
                del headers[REQUEST_ID_HEADER]
            await send(message)

        await self.app(scope, receive, send_named)


def build_app() -> FastAPI:
    """The service's app, built in the replica (never pickled) from the replica's
    ``TORCHLAB_*`` environment. Ray Serve runs its lifespan: the devices, their worker
    processes and the calibration start with the replica and stop with it."""
    app = create_app()
    replica = serve.get_replica_context().replica_id.unique_id
    app.add_middleware(ReplicaHeaderMiddleware, replica=replica)
    return app


class TorchlabReplica:
    """One replica of the service. Its options are the Serve config file's."""

    # Ray Serve's ingress wrapper provides the built app as ``self.app``.
    app: FastAPI

    async def check_health(self) -> None:
        """Ray Serve's periodic health check: ``GET /health`` through this replica's app
        (its middleware included); raising marks the replica unhealthy, and Serve replaces
        it."""
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            response = await client.get("/health", timeout=HEALTH_CHECK_TIMEOUT_S)
        if response.status_code != 200:
            raise RuntimeError(f"GET /health answered {response.status_code}")


torchlab = serve.deployment(name="torchlab")(serve.ingress(build_app)(TorchlabReplica))
"""The deployment, named as the Serve config files name it."""

app = torchlab.bind()
"""The application that ``import_path: deploy.ray.app:app`` names."""
