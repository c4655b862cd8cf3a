"""An HTTP request's ASGI scope, for driving an app through its ASGI interface in process.

Shared by ``bench/transport.py`` and ``tests/api/test_slow_bodies.py``.
"""

from __future__ import annotations

from typing import Any


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> dict[str, Any]:
    """The scope of ``method path?query`` with ``headers`` (lower-case names), as uvicorn
    gives it: HTTP/1.1 from 127.0.0.1."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
