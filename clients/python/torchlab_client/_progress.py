"""Progress of long work: the ``progress`` events the service streams (server-sent events)
while it fits, benchmarks or transforms pictures, for a callback or a progress bar.

``progress=True`` draws a bar with tqdm (``pip install torchlab-client[progress]``), in a
terminal or, through ``tqdm.auto``, as a widget in a notebook; ``progress=callable`` gets
each :class:`ProgressEvent` instead. :class:`EventReader` cuts a stream's bytes into its
events, within the client's ``max_response_bytes``. Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from torchlab_client._exceptions import ProtocolError, ResponseTooLargeError

EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class ProgressEvent:
    """How far the work is: ``done`` of ``total`` ``unit``s (``"epoch"``, ``"run"``,
    ``"picture"``), with what else the service said in ``info`` (``loss`` for fits,
    ``device`` and ``run`` for the benchmark)."""

    done: int
    total: int
    unit: str
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``done / total``, 1.0 for nothing to do."""
        return self.done / self.total if self.total else 1.0

    @classmethod
    def from_json(cls, data: str) -> ProgressEvent:
        """An event from the data of a ``progress`` server-sent event; a
        :class:`ProtocolError` if it is not ``{"done", "total", "unit", ...}``."""
        body = event_json(data, "progress")
        try:
            done, total, unit = body.pop("done"), body.pop("total"), body.pop("unit")
            return cls(int(done), int(total), str(unit), body)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"a malformed progress event: {data[:200]!r}") from exc


def event_json(data: str, name: str) -> dict[str, Any]:
    """The JSON object of an event's data; a :class:`ProtocolError` if it is not one."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the data of a {name} event is not JSON: {data[:200]!r}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"the data of a {name} event is not a JSON object: {data[:200]!r}")
    return body


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: its name (``message`` when unnamed) and its data."""

    event: str
    data: str


class EventReader:
    """A stream of server-sent events, fed its bytes as they arrive: the events each piece
    completes. Lines end with LF or CRLF; comments (keep-alives), ``id`` and ``retry`` are
    skipped. The whole stream may hold ``limit`` bytes (one event's data, the result, is
    the answer itself); past it, or in an unfinished line longer than that, the stream is
    given up with :class:`ResponseTooLargeError` before it is all held."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0
        self._pending = bytearray()
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        self.received += len(chunk)
        if self.received > self.limit:
            raise ResponseTooLargeError(
                f"the event stream holds more than max_response_bytes={self.limit:,} bytes",
                self.limit,
            )
        events: list[ServerEvent] = []
        pending = self._pending
        scan = len(pending)
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", scan)) >= 0:
            line = bytes(pending[start:end]).removesuffix(b"\r")
            start = scan = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        del pending[:start]
        return events

    def _line(self, raw: bytes) -> ServerEvent | None:
        try:
            line = raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"an event stream's line is not UTF-8: {raw[:80]!r}") from exc
        if not line:
            event = ServerEvent(self._event or "message", "\n".join(self._data))
            dispatch = bool(self._data)
            self._event, self._data = "", []
            return event if dispatch else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


Sink: TypeAlias = Callable[[ProgressEvent], Any]
"""Where a request's progress events go."""

Progress: TypeAlias = bool | Sink | None
"""What a long method's ``progress`` takes: ``True`` for a bar, a callable for the events,
``None`` or ``False`` for neither (the request is not streamed)."""


class ProgressBar:
    """A tqdm bar fed with events: created at the first (its total and unit), moved to each
    event's ``done``, the loss or device shown beside it, closed at the end."""

    def __init__(self, description: str, **tqdm_options: Any) -> None:
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415 (an optional extra)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "progress=True draws a bar with tqdm: pip install 'torchlab-client[progress]' "
                "(or pass progress=callable to receive the events)"
            ) from exc
        self._tqdm = tqdm
        self._description = description
        self._options = tqdm_options
        self._bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        if self._bar is None:
            self._bar = self._tqdm(
                total=event.total, unit=event.unit, desc=self._description, **self._options
            )
        shown = {key: value for key, value in event.info.items() if key in ("loss", "device")}
        if shown:
            self._bar.set_postfix(shown, refresh=False)
        self._bar.update(event.done - self._bar.n)

    def close(self, finished: bool = False) -> None:
        """Close the bar; ``finished`` work that stopped before its total (a fit that
        converged early) ends the bar where it stopped, as complete."""
        if self._bar is not None:
            if finished and self._bar.n < self._bar.total:
                self._bar.total = self._bar.n
                self._bar.refresh()
            self._bar.close()
            self._bar = None


def progress_sink(progress: Progress, description: str) -> Sink | None:
    """Where a method's events go: a new :class:`ProgressBar` for ``True``, the callable
    itself, or ``None`` (no streaming)."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return ProgressBar(description)
    if not callable(progress):
        raise TypeError(f"progress must be a bool or a callable, not {type(progress).__name__}")
    return progress


def close_sink(sink: Sink | None, finished: bool = False) -> None:
    """Close a bar the method opened (a caller's callable is left as it is)."""
    if isinstance(sink, ProgressBar):
        sink.close(finished)
