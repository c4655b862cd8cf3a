"""A picture a compute drew, as the response content that carries it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Png:
    """A PNG picture with the headers that describe it (``X-Panel-Count``, ...)."""

    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


def panel_headers(panels: int, rows: int, columns: int) -> dict[str, str]:
    """The headers of a figure of ``panels`` panels on a ``rows`` × ``columns`` grid."""
    return {"X-Panel-Count": str(panels), "X-Panel-Layout": f"{rows}x{columns}"}
