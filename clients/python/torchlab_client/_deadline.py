"""The deadline of one try of a request: ``timeout`` seconds from its start to the last byte
of its answer, whatever the answer is (a plain body, a binary one, a stream of events).

httpx's own timeouts bound each wait for a piece of the answer, not the whole: a server that
drips a byte a second, or streams progress events or keep-alive comments and never its
result, kept a call going for as long as it liked. The async client cancels the try at its
deadline (:func:`async_enforced`, anyio's ``fail_after``: asyncio and trio alike). The
blocking client cannot interrupt a read: it checks the deadline as each piece arrives, and
waits for a piece of the body no longer than the time left when the body starts
(:meth:`Deadline.cap_reads`), so a try overruns its deadline by at most one such wait.

Both clients hold the deadline through :func:`enforced` and :func:`async_enforced`, looked
up on this module, as the waits of ``_retry`` are.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import anyio
import httpx

from torchlab_client._exceptions import TransportTimeoutError


def deadline_seconds(timeout: float | httpx.Timeout | None) -> float | None:
    """The seconds a try may take: the number itself, an :class:`httpx.Timeout`'s ``read``
    (the wait for the answer, which the whole try now shares), None for no deadline."""
    if isinstance(timeout, httpx.Timeout):
        return timeout.read
    return None if timeout is None else float(timeout)


class Deadline:
    """When one try must be over: ``seconds`` after it was made (None: never)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (0 once past), None without a deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def error(self) -> TransportTimeoutError:
        return TransportTimeoutError(
            f"the answer was not complete within timeout={self.seconds:g} s (the deadline of "
            "each try, from sending the request to the last byte of its answer)"
        )

    def check(self) -> None:
        """Raise :class:`TransportTimeoutError` once the deadline has passed."""
        if self.expired():
            raise self.error()

    def cap_reads(self, response: httpx.Response) -> None:
        """Wait for each piece of ``response``'s body at most the time left now (httpcore
        takes the read timeout from the request once, when the body starts), unless that
        saves less than a tenth of the wait: the request is left as it was sent."""
        left = self.remaining()
        timeouts = response.request.extensions.get("timeout")
        if left is None or not isinstance(timeouts, dict):
            return
        read = timeouts.get("read")
        if read is None or left < 0.9 * read:
            response.request.extensions["timeout"] = {**timeouts, "read": max(left, 0.001)}


@contextlib.contextmanager
def enforced(deadline: Deadline) -> Iterator[Deadline]:
    """The blocking client's hold on a try: the reads check ``deadline`` themselves."""
    yield deadline


@contextlib.contextmanager
def async_enforced(deadline: Deadline) -> Iterator[Deadline]:
    """The async client's hold on a try: cancelled at ``deadline``, then raised as
    :class:`TransportTimeoutError`."""
    left = deadline.remaining()
    if left is None:
        yield deadline
        return
    scope: anyio.CancelScope | None = None
    try:
        with anyio.fail_after(left) as scope:
            yield deadline
    except TimeoutError as exc:
        if scope is None or not scope.cancelled_caught:
            raise  # not the deadline's
        raise deadline.error() from exc
