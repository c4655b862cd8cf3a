"""Reference tables generated from the code: the settings and limits, and the error codes.

``python -m service.reference`` rewrites the README's generated sections (between
``<!-- generated:NAME -->`` and ``<!-- end:NAME -->``); a test keeps them up to date.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from service.config import ENV_PREFIX, Limits, Settings
from service.errors import ErrorCode

STATUS_MEANINGS = {
    400: "the request cannot be read (not HTTP/1.1, a body not JSON, a broken multipart form)",
    401: "a missing or wrong API key",
    404: "no such route",
    405: "the route does not take this method",
    406: "progress events (`Accept: text/event-stream`) asked for with a PNG or binary result",
    408: "the request's line and headers (`header_timeout_s`), or its body (`body_timeout_s`, "
    "`body_min_rate`), did not arrive in time; the connection closes",
    413: "over a limit; `details` holds `limit`, `allowed` and `requested` (numbers)",
    415: "a body or file of a kind the route does not take",
    422: "well-formed but invalid; `details` says what and where",
    429: "every compute slot of the device is busy, or there is no room for the body among those "
    "held at once; retry after `Retry-After` seconds",
    431: "the request's line and headers, or a chunked body's trailer fields, are too large "
    "(`details.limit`: `max_head_bytes`, 65,536 bytes, or `max_header_fields`, 100 fields); "
    "the connection closes",
    499: "the client closed the connection before its answer (its work was stopped); "
    "nobody reads it, it is what the logs and metrics show",
    500: "a bug; the body quotes the request id",
    503: "the device ran out of memory, or the worker running the request was lost; retry",
    504: "the request ran past its time limit",
}


def _default(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, list):
        return "empty" if not value else ",".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 16:
        power = value.bit_length() - 1
        return f"`{value}` (2^{power})" if value == 1 << power else f"`{value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _rows(model: type[Settings] | type[Limits]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name == "limits":
            continue
        text = " ".join((field.description or "").split()).replace("``", "`")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {_default(field)} | {text} |")
    return rows


def settings_table() -> str:
    """Every setting and limit: its variable, default and meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    return "\n".join([*lines, *_rows(Settings), *_rows(Limits)])


def error_codes_table() -> str:
    """Every error code, grouped by its HTTP status."""
    lines = ["| status | meaning | codes |", "|---|---|---|"]
    for status, meaning in STATUS_MEANINGS.items():
        codes = ", ".join(f"`{code}`" for code in ErrorCode if code.status == status)
        lines.append(f"| {status} | {meaning} | {codes} |")
    return "\n".join(lines)


SECTIONS = {"settings": settings_table, "error-codes": error_codes_table}


def _writer(table: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + table + "\n" + match.group(2)


def render(readme: str) -> str:
    """``readme`` with every generated section written anew."""
    for name, build in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- end:{name} -->)", flags=re.DOTALL
        )
        if not pattern.search(readme):
            raise ValueError(f"the README has no generated section {name!r}")
        readme = pattern.sub(_writer(build()), readme)
    return readme


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
