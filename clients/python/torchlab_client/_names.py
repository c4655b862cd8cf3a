"""Names given by people: suggestions for a misspelt one, and lists that may be one name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'hessian'?)"`` when a candidate is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def name_list(value: str | Iterable[T] | None) -> list[str | T] | None:
    """A list of names from one name or several: a bare string is one name, never its
    characters."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def item_list(value: Any, one: type | tuple[type, ...] = ()) -> list[Any] | None:
    """A list from one item or several: a string, a mapping, an array of ``one``'s types or
    anything with ``__array__`` is one item; other iterables are several."""
    if value is None:
        return None
    if isinstance(value, str | bytes | dict) or (one and isinstance(value, one)):
        return [value]
    if hasattr(value, "keys") or hasattr(value, "__array__"):
        return [value]
    return list(value)
