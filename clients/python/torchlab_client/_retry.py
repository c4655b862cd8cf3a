"""When to try a request again and how long to wait (:class:`Retry`), and the waits.

Both clients wait through :func:`sleep` and :func:`async_sleep`, looked up on this module at
each retry, so that tests can record the waits instead of sleeping.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import anyio
import httpx

from torchlab_client._exceptions import APIError, parse_retry_after


@dataclass(frozen=True)
class Retry:
    """When and how long to wait before trying a request again.

    A request is retried up to ``total`` times after a 429 or 503 answer (``statuses``) or
    a connection error, never after a 4xx validation error, a 413 or a 504, nor after a 503
    that names a limit the request reached (``details["limit"]``: a worker's memory), which
    the same request would reach again. The wait is
    the answer's ``Retry-After`` when it has one (an answer asking for more than
    ``max_retry_after`` seconds is raised at once), else ``backoff_factor · 2^attempt``
    seconds, at most ``max_backoff``, plus up to ``jitter`` of itself at random.
    """

    total: int = 2
    backoff_factor: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    statuses: frozenset[int] = frozenset({429, 503})
    jitter: float = 0.1
    respect_retry_after: bool = True

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt + 1`` when the answer gave no hint."""
        delay = min(self.max_backoff, self.backoff_factor * 2.0**attempt)
        return delay * (1 + random.uniform(0, self.jitter)) if self.jitter else delay  # noqa: S311

    def after_response(self, error: APIError, attempt: int) -> float | None:
        """Seconds to wait before retrying after an error answer, or None to raise it."""
        if attempt >= self.total or error.status_code not in self.statuses:
            return None
        if error.status_code == 503 and "limit" in error.details:
            return None
        if self.respect_retry_after and error.response is not None:
            hint = parse_retry_after(error.response.headers.get("retry-after"))
            if hint is not None:
                return hint if hint <= self.max_retry_after else None
        return self.backoff(attempt)

    def after_exception(self, exc: httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before retrying after a connection error, or None to raise it.

        Connection failures and dropped connections are retried (torchlab's routes are
        pure functions of the request); the client's own read timeout is not, since the
        service is still computing.
        """
        retryable = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
        if attempt >= self.total or not isinstance(exc, retryable):
            return None
        return self.backoff(attempt)


def sleep(seconds: float) -> None:
    """The blocking client's wait between tries."""
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """The async client's wait between tries (asyncio or trio, through anyio)."""
    await anyio.sleep(seconds)
