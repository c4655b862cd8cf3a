"""What :class:`~torchlab_client.Client` and :class:`~torchlab_client.AsyncClient` share:
their configuration, encoding a route's request (``_routes``) into an httpx request, and
the readers of tensor answers (``_parsers``). Nothing here does I/O.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeAlias, TypeVar

import httpx

from torchlab_client._codec import EncodeStats, require_torch, to_json_values
from torchlab_client._exceptions import ClientClosedError
from torchlab_client._images import Upload
from torchlab_client._parsers import json_body
from torchlab_client._retry import Retry
from torchlab_client._routes import Request
from torchlab_client._version import __version__

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_B64_THRESHOLD = 4096
"""Request tensors of more bytes than this go as base64 (see ``b64_threshold``)."""


class _Unset:
    """The default of :meth:`BaseClient.with_options`' arguments: keep the client's."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

ResponseEncoding: TypeAlias = Literal["auto", "json", "b64"]
TimeoutTypes: TypeAlias = float | httpx.Timeout | None


@dataclass(frozen=True)
class Encoded:
    """A request as it goes on the wire: a JSON body, or form fields and files."""

    method: str
    path: str
    content: bytes | None = None
    form: dict[str, str] | None = None
    files: list[tuple[str, Upload]] | None = None
    params: dict[str, str] | None = None


def base_url_of(
    base_url: str | httpx.URL | None, http_client: httpx.Client | httpx.AsyncClient | None
) -> str | httpx.URL | None:
    """``base_url``, else that of a given httpx client (the environment's comes later)."""
    if base_url is None and http_client is not None and str(http_client.base_url):
        return http_client.base_url
    return base_url


class BaseClient:
    """Configuration, and the encoding and reading both clients share."""

    def __init__(
        self,
        base_url: str | httpx.URL | None = None,
        *,
        api_key: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        retries: int | Retry = 2,
        headers: Mapping[str, str] | None = None,
        b64_threshold: int = DEFAULT_B64_THRESHOLD,
        response_encoding: ResponseEncoding = "auto",
        as_torch: bool = False,
    ) -> None:
        self.base_url = httpx.URL(
            str(base_url or os.environ.get("TORCHLAB_URL") or DEFAULT_BASE_URL).rstrip("/")
        )
        self.api_key = api_key if api_key is not None else os.environ.get("TORCHLAB_API_KEY")
        self.timeout = timeout
        self.retry = retries if isinstance(retries, Retry) else Retry(total=retries)
        if self.retry.total < 0:
            raise ValueError("retries must be >= 0")
        if b64_threshold < 0:
            raise ValueError("b64_threshold must be >= 0")
        if response_encoding not in ("auto", "json", "b64"):
            raise ValueError("response_encoding must be 'auto', 'json' or 'b64'")
        self.b64_threshold = b64_threshold
        self.response_encoding: ResponseEncoding = response_encoding
        self.as_torch = as_torch
        self._owns_http = False
        self.headers: dict[str, str] = {"User-Agent": f"torchlab-client/{__version__}"}
        if headers:
            self.headers.update(headers)
        if self.api_key:
            self.headers.setdefault("Authorization", f"Bearer {self.api_key}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r})"

    def with_options(
        self,
        *,
        timeout: TimeoutTypes = UNSET,
        retries: int | Retry = UNSET,
        headers: Mapping[str, str] | None = None,
        b64_threshold: int = UNSET,
        response_encoding: ResponseEncoding = UNSET,
        as_torch: bool = UNSET,
    ) -> Self:
        """A client like this one, sharing its connections, with some options changed:
        ``client.with_options(timeout=300, retries=0).benchmark(...)``. Options not given
        are this client's; ``headers`` are added to its headers. Closing the copy does not
        close the connections; closing this client closes them for the copy too."""
        clone = copy.copy(self)
        BaseClient.__init__(
            clone,
            self.base_url,
            api_key=self.api_key,
            timeout=self.timeout if timeout is UNSET else timeout,
            retries=self.retry if retries is UNSET else retries,
            headers={**self.headers, **(headers or {})},
            b64_threshold=self.b64_threshold if b64_threshold is UNSET else b64_threshold,
            response_encoding=(
                self.response_encoding if response_encoding is UNSET else response_encoding
            ),
            as_torch=self.as_torch if as_torch is UNSET else as_torch,
        )
        clone._owns_http = False
        return clone

    # --- reading -------------------------------------------------------------------------

    def _reader(
        self,
        parse: Callable[[dict[str, Any], bool], T],
        as_torch: bool | None,
        request: Request | None = None,
    ) -> Callable[[httpx.Response], T]:
        """The reader of an answer with tensors; checks that torch is there for
        ``as_torch`` before anything is sent. The answer is read as ``request`` named
        things (a table's columns)."""
        wants_torch = self.as_torch if as_torch is None else as_torch
        if wants_torch:
            require_torch()
        if request is None:
            return lambda response: parse(json_body(response), wants_torch)
        return lambda response: parse(request.answer(json_body(response)), wants_torch)

    def _check_open(self, http: httpx.Client | httpx.AsyncClient) -> None:
        """Refuse to send through a closed httpx client, in the client's own terms."""
        if http.is_closed:
            raise ClientClosedError(
                f"this {type(self).__name__} is closed (or the httpx client given to it is): "
                "make a new one, or use it in a `with` block and call it inside"
            )

    # --- encoding ------------------------------------------------------------------------

    def _encoding(self) -> dict[str, str]:
        """The query asking for base64 tensors, unless ``response_encoding="json"``:
        numpy decodes base64 several times faster than it parses JSON lists, and a small
        tensor's base64 is no longer than its list."""
        return {} if self.response_encoding == "json" else {"encoding": "b64"}

    def _encode(self, request: Request) -> Encoded:
        """Tensors as JSON lists or base64 (``b64_threshold``), fields that are None left
        out, and the query asking for base64 answers when the answer carries tensors."""
        if request.method == "GET":
            return Encoded(request.method, request.path)
        fields = {name: value for name, value in request.fields.items() if value is not None}
        if request.files:
            form: dict[str, str] = {}
            for name, value in fields.items():
                if isinstance(value, str):
                    form[name] = value  # a plain value: the service reads words as they are
                else:
                    wire = to_json_values(value, self.b64_threshold)
                    form[name] = json.dumps(wire, allow_nan=False, separators=(",", ":"))
            params = {} if request.png or not request.tensors else self._encoding()
            return Encoded(
                "POST", request.path, form=form, files=list(request.files), params=params
            )
        wire = to_json_values(fields, self.b64_threshold, EncodeStats())
        content = json.dumps(wire, allow_nan=False, separators=(",", ":")).encode()
        params = {} if request.png or not request.tensors else self._encoding()
        return Encoded(request.method, request.path, content=content, params=params)

    def _build_request(
        self, http: httpx.Client | httpx.AsyncClient, encoded: Encoded
    ) -> httpx.Request:
        headers = {"Accept": "application/json, image/png", **self.headers}
        if encoded.content is not None:
            headers["Content-Type"] = "application/json"
        return http.build_request(
            encoded.method,
            f"{self.base_url}{encoded.path}",
            content=encoded.content,
            data=encoded.form,
            files=encoded.files,
            params=encoded.params or None,
            headers=headers,
            timeout=self.timeout,
        )
