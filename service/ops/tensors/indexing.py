"""Parse NumPy/PyTorch *basic* indexing expressions written as text.

A client may send an index such as ``"[:, 1, ::2]"`` and this module turns it into the
Python tuple ``(slice(None), 1, slice(None, None, 2))`` that can be used as ``tensor[idx]`` or
``ndarray[idx]``. User text is never handed to ``eval``/``exec``/``compile``/``ast``; a small
hand-written tokenizer and parser accept only the grammar below.

Grammar (whitespace is allowed between any two tokens)::

    index   := "[" items? "]" | items?          -- the brackets are optional
    items   := item ("," item)* ","?            -- a trailing comma is allowed
    item    := "..." | "None" | slice | integer
    slice   := part? ":" part? (":" part?)?     -- start:stop or start:stop:step
    part    := integer | "None"
    integer := ("+" | "-")? digit{1,19}         -- decimal digits only

Empty text, blank text and ``"[]"`` all mean the empty tuple (the whole tensor). At most one
``...`` may appear. Floats, names (``x``, ``True``, ``__import__``), nested brackets, empty
items (``1,,2``) and slices with more than two colons are rejected with
:class:`IndexParseError`, which carries the 0-based column of the offending character.

:func:`check_index` then validates a parsed index against a shape (number of indexed
dimensions, integer ranges, a single ellipsis, non-zero steps) so that a caller can reject a
bad request before touching any data, and returns it resolved against that shape: slice
bounds and steps clamped to their dimension as NumPy clamps them, so that torch's int64
arithmetic gives NumPy's answer even for steps and bounds near ``2**63``. Negative steps are
legal NumPy and pass :func:`check_index`; PyTorch rejects them, which is for the caller to
decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import EllipsisType
from typing import TypeAlias

from schemas.tensors import MAX_INDEX_LENGTH

__all__ = [
    "MAX_DIGITS",
    "IndexItem",
    "IndexParseError",
    "check_index",
    "format_index",
    "parse_index",
    "resolve_slice",
]

IndexItem: TypeAlias = int | slice | EllipsisType | None

#: The longest integer literal accepted, in digits (enough for any int64).
MAX_DIGITS = 19

_HINT = "an index is made of integers, slices (start:stop:step), None and ..."
_DIGITS = frozenset("0123456789")
_WHITESPACE = frozenset(" \t\r\n\f\v")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class IndexParseError(ValueError):
    """An index expression could not be parsed.

    ``position`` is the 0-based column in the text where the problem was found (it may equal
    the length of the text when something is missing at the end).
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message


class _Kind(Enum):
    LBRACKET = "'['"
    RBRACKET = "']'"
    COMMA = "','"
    COLON = "':'"
    INT = "integer"
    NONE = "None"
    ELLIPSIS = "'...'"
    END = "the end of the text"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    position: int
    value: int | None = None


_PUNCTUATION = {
    "[": _Kind.LBRACKET,
    "]": _Kind.RBRACKET,
    ",": _Kind.COMMA,
    ":": _Kind.COLON,
}


def _describe(char: str) -> str:
    """Render one character for an error message, readable even when it is invisible."""
    if char.isprintable() and char not in _WHITESPACE:
        return repr(char)
    return f"{char!r} (U+{ord(char):04X})"


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens, raising :class:`IndexParseError` on anything unknown."""
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if char in _WHITESPACE:
            i += 1
            continue
        kind = _PUNCTUATION.get(char)
        if kind is not None:
            tokens.append(_Token(kind, i))
            i += 1
            continue
        if char == ".":
            if text.startswith("...", i):
                tokens.append(_Token(_Kind.ELLIPSIS, i))
                i += 3
                continue
            if i + 1 < n and text[i + 1] in _DIGITS:
                end = i + 1
                while end < n and text[end] in _DIGITS:
                    end += 1
                raise IndexParseError(
                    f"floating-point number {text[i:end]!r} at column {i} is not an index; "
                    f"indices must be integers",
                    i,
                )
            raise IndexParseError(
                f"unexpected '.' at column {i}; write '...' (three dots) for an ellipsis; {_HINT}",
                i,
            )
        if char in _DIGITS or char in "+-":
            token, i = _read_integer(text, i)
            tokens.append(token)
            continue
        if char in _NAME_CHARS:
            start = i
            while i < n and text[i] in _NAME_CHARS:
                i += 1
            name = text[start:i]
            if name == "None":
                tokens.append(_Token(_Kind.NONE, start))
                continue
            shown = name if len(name) <= 20 else name[:20] + "..."
            raise IndexParseError(
                f"unknown name {shown!r} at column {start}; {_HINT}",
                start,
            )
        raise IndexParseError(
            f"unexpected character {_describe(char)} at column {i}; {_HINT}",
            i,
        )
    tokens.append(_Token(_Kind.END, n))
    return tokens


def _read_integer(text: str, start: int) -> tuple[_Token, int]:
    """Read an optionally signed decimal integer starting at ``start``."""
    n = len(text)
    i = start
    negative = False
    if text[i] in "+-":
        negative = text[i] == "-"
        i += 1
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n or text[i] not in _DIGITS:
            shown = "the end of the text" if i >= n else _describe(text[i])
            raise IndexParseError(
                f"expected digits after the sign {text[start]!r} at column {start}, "
                f"found {shown} at column {i}; {_HINT}",
                i,
            )
    digits_start = i
    while i < n and text[i] in _DIGITS:
        i += 1
    digits = text[digits_start:i]
    if i < n and text[i] == "." and not text.startswith("...", i):
        end = i + 1
        while end < n and (text[end] in _DIGITS or text[end] in "eE"):
            end += 1
        raise IndexParseError(
            f"floating-point number {text[start:end]!r} at column {start} is not an index; "
            f"indices must be integers",
            start,
        )
    if i < n and text[i] in _NAME_CHARS:
        raise IndexParseError(
            f"unexpected character {text[i]!r} at column {i} after the number {digits!r}; "
            f"integers are written with decimal digits only",
            i,
        )
    if len(digits) > MAX_DIGITS:
        raise IndexParseError(
            f"integer at column {start} has {len(digits)} digits; at most {MAX_DIGITS} are allowed",
            start,
        )
    value = int(digits)
    return _Token(_Kind.INT, start, -value if negative else value), i


class _Parser:
    """Recursive-descent parser over the token list produced by :func:`_tokenize`."""

    def __init__(self, tokens: list[_Token], max_items: int) -> None:
        self._tokens = tokens
        self._pos = 0
        self._max_items = max_items
        self._ellipsis_at: int | None = None

    def _peek(self) -> _Token:
        return self._tokens[self._pos]

    def _advance(self) -> _Token:
        token = self._tokens[self._pos]
        if token.kind is not _Kind.END:
            self._pos += 1
        return token

    @staticmethod
    def _unexpected(token: _Token, expected: str) -> IndexParseError:
        if token.kind is _Kind.END:
            return IndexParseError(
                f"unexpected end of the text at column {token.position}; expected {expected}",
                token.position,
            )
        return IndexParseError(
            f"unexpected {token.kind.value} at column {token.position}; expected {expected}",
            token.position,
        )

    def parse(self) -> tuple[IndexItem, ...]:
        first = self._peek()
        if first.kind is _Kind.LBRACKET:
            self._advance()
            items = self._items(closing=_Kind.RBRACKET)
            close = self._peek()
            if close.kind is _Kind.END:
                raise IndexParseError(
                    f"missing ']' at column {close.position} to close the '[' "
                    f"at column {first.position}",
                    close.position,
                )
            if close.kind is not _Kind.RBRACKET:  # pragma: no cover - _items stops only here
                raise self._unexpected(close, "']'")
            self._advance()
            end = self._peek()
            if end.kind is not _Kind.END:
                if end.kind is _Kind.RBRACKET:
                    raise IndexParseError(
                        f"unbalanced ']' at column {end.position}; it has no matching '['",
                        end.position,
                    )
                raise self._unexpected(
                    end, f"nothing after the closing ']' at column {close.position}"
                )
            return items
        items = self._items(closing=_Kind.END)
        end = self._peek()
        if end.kind is _Kind.RBRACKET:
            raise IndexParseError(
                f"unbalanced ']' at column {end.position}; it has no matching '['",
                end.position,
            )
        if end.kind is not _Kind.END:  # pragma: no cover - _items stops only here
            raise self._unexpected(end, "the end of the text")
        return items

    def _items(self, closing: _Kind) -> tuple[IndexItem, ...]:
        """Parse ``item ("," item)* ","?`` up to (not including) a closing token."""
        items: list[IndexItem] = []
        if self._at_close(closing):
            return ()
        while True:
            token = self._peek()
            if len(items) >= self._max_items:
                raise IndexParseError(
                    f"too many index items: item {len(items) + 1} starts at column "
                    f"{token.position}, but at most {self._max_items} are allowed",
                    token.position,
                )
            items.append(self._item())
            sep = self._peek()
            if self._at_close(closing):
                return tuple(items)
            if sep.kind is not _Kind.COMMA:
                raise self._unexpected(sep, "',' between index items")
            self._advance()
            if self._at_close(closing):
                return tuple(items)  # trailing comma

    def _at_close(self, closing: _Kind) -> bool:
        kind = self._peek().kind
        return kind is _Kind.END or kind is closing or kind is _Kind.RBRACKET

    def _item(self) -> IndexItem:
        token = self._peek()
        if token.kind is _Kind.ELLIPSIS:
            self._advance()
            if self._ellipsis_at is not None:
                raise IndexParseError(
                    f"a second '...' at column {token.position}; an index can hold only one "
                    f"ellipsis (the first is at column {self._ellipsis_at})",
                    token.position,
                )
            self._ellipsis_at = token.position
            if self._peek().kind is _Kind.COLON:
                colon = self._peek()
                raise IndexParseError(
                    f"unexpected ':' at column {colon.position}; '...' cannot be part of a slice",
                    colon.position,
                )
            return Ellipsis
        if token.kind is _Kind.COMMA:
            raise IndexParseError(
                f"empty index item at column {token.position}; write an integer, a slice, "
                f"None or ... between the commas",
                token.position,
            )
        if token.kind is _Kind.LBRACKET:
            raise IndexParseError(
                f"unexpected '[' at column {token.position}; nested brackets (lists of indices) "
                f"are not supported, only basic indexing: {_HINT}",
                token.position,
            )
        if token.kind not in (_Kind.INT, _Kind.NONE, _Kind.COLON):
            raise self._unexpected(token, "an integer, a slice, None or ...")
        start = self._part()
        if self._peek().kind is not _Kind.COLON:
            return start
        self._advance()
        stop = self._part()
        step: int | None = None
        if self._peek().kind is _Kind.COLON:
            self._advance()
            step = self._part()
            extra = self._peek()
            if extra.kind is _Kind.COLON:
                raise IndexParseError(
                    f"too many ':' at column {extra.position}; a slice is start:stop:step "
                    f"with at most two colons",
                    extra.position,
                )
        return slice(start, stop, step)

    def _part(self) -> int | None:
        """Parse an optional integer or ``None`` (a slice part, or a whole item)."""
        token = self._peek()
        if token.kind is _Kind.INT:
            self._advance()
            return token.value
        if token.kind is _Kind.NONE:
            self._advance()
        elif token.kind is _Kind.ELLIPSIS:
            raise IndexParseError(
                f"unexpected '...' at column {token.position}; '...' cannot be part of a slice",
                token.position,
            )
        return None


def parse_index(
    text: str, *, max_length: int = MAX_INDEX_LENGTH, max_items: int = 64
) -> tuple[IndexItem, ...]:
    """Parse a basic-indexing expression such as ``"[:, 1, ::2]"`` into an index tuple.

    The result can be used directly as ``tensor[result]`` or ``ndarray[result]``. A single
    item still gives a one-element tuple (``"[2]"`` -> ``(2,)``), which indexes the same way.

    Args:
        text: The expression; surrounding brackets are optional.
        max_length: Longest accepted text, in characters.
        max_items: Most index items accepted.

    Returns:
        A tuple of ``int``, ``slice``, ``None`` and ``Ellipsis`` items.

    Raises:
        IndexParseError: The text is not a valid expression; ``position`` is the column.
    """
    if not isinstance(text, str):
        raise IndexParseError(f"an index must be given as text, not {type(text).__name__}", 0)
    if len(text) > max_length:
        raise IndexParseError(
            f"index text is {len(text)} characters long; at most {max_length} are allowed",
            max_length,
        )
    return _Parser(_tokenize(text), max_items).parse()


def format_index(index: tuple[IndexItem, ...]) -> str:
    """Render an index tuple back as text that :func:`parse_index` reads (e.g. ``[:, 1]``)."""
    parts: list[str] = []
    for item in index:
        if item is None:
            parts.append("None")
        elif item is Ellipsis:
            parts.append("...")
        elif isinstance(item, slice):
            start = "" if item.start is None else str(item.start)
            stop = "" if item.stop is None else str(item.stop)
            text = f"{start}:{stop}"
            if item.step is not None:
                text += f":{item.step}"
            parts.append(text)
        else:
            parts.append(str(item))
    return "[" + ", ".join(parts) + "]"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_index(index: tuple[IndexItem, ...], shape: tuple[int, ...]) -> tuple[IndexItem, ...]:
    """Check that ``index`` can basic-index an array of ``shape``, without touching data, and
    return it resolved against that shape.

    Mirrors NumPy's rules: at most one ``...``; no more integer/slice items than dimensions
    (``None`` adds a dimension and ``...`` stands for the rest); every integer within
    ``[-size, size)`` of the dimension it indexes; slice parts integers or ``None`` and no step
    of zero. Negative steps are accepted (NumPy allows them; PyTorch does not, which is checked
    elsewhere).

    The result selects what ``index`` selects, each slice resolved by :func:`resolve_slice`:
    torch computes a slice's length and stride in int64, where a step near 2**63 overflows
    (``arange(4)[::2**63 - 1]`` is empty in torch, ``[0]`` in NumPy).

    Raises:
        IndexError: With a message that says which item does not fit and why.
    """
    ellipses = [i for i, item in enumerate(index) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError(
            f"an index can hold only one ellipsis ('...'), but items {ellipses} are ellipses"
        )
    for position, item in enumerate(index):
        if item is None or item is Ellipsis or _is_int(item):
            continue
        if isinstance(item, slice):
            for name in ("start", "stop", "step"):
                part = getattr(item, name)
                if part is not None and not _is_int(part):
                    raise IndexError(
                        f"index item {position}: slice {name} must be an integer or None, "
                        f"not {type(part).__name__}"
                    )
            if item.step == 0:
                raise IndexError(f"index item {position}: slice step cannot be zero")
            continue
        raise IndexError(
            f"index item {position}: {type(item).__name__} is not a basic index; "
            f"use integers, slices, None or ..."
        )

    consuming = sum(1 for item in index if item is not None and item is not Ellipsis)
    ndim = len(shape)
    if consuming > ndim:
        raise IndexError(
            f"too many indices: the tensor has {ndim} dimension{'s' if ndim != 1 else ''} "
            f"(shape {list(shape)}), but {consuming} were indexed"
        )

    # Items before the ellipsis index dimensions from the front, items after it from the back.
    split = ellipses[0] if ellipses else len(index)
    resolved = list(index)
    dim = 0
    for position in range(split):
        resolved[position], dim = _check_item(index[position], position, dim, shape)
    dim = ndim - sum(1 for item in index[split + 1 :] if item is not None)
    for position in range(split + 1, len(index)):
        resolved[position], dim = _check_item(index[position], position, dim, shape)
    return tuple(resolved)


def _check_item(
    item: IndexItem, position: int, dim: int, shape: tuple[int, ...]
) -> tuple[IndexItem, int]:
    """Check one non-ellipsis item against dimension ``dim``; return it resolved, and the
    next dimension."""
    if item is None:
        return None, dim
    if isinstance(item, slice):
        return resolve_slice(item, shape[dim]), dim + 1
    assert isinstance(item, int)
    size = shape[dim]
    if not -size <= item < size:
        valid = f"valid: {-size} to {size - 1}" if size else "it is empty"
        raise IndexError(
            f"index item {position}: {item} is out of range for dimension {dim} "
            f"of size {size} ({valid})"
        )
    return item, dim + 1


def resolve_slice(item: slice, size: int) -> slice:
    """``item`` as NumPy reads it on a dimension of ``size``: bounds clamped to the dimension
    (``slice.indices``), a step longer than it cut to its size (both take one element), the
    step's sign kept. The same elements, in numbers torch's int64 arithmetic cannot overflow.
    """
    start, stop, step = item.indices(size)  # NumPy's arithmetic, on Python's unbounded ints
    limit = max(size, 1)
    step = max(-limit, min(step, limit))
    if start < 0 or size == 0:  # a negative step that starts before the front: nothing
        return slice(0, 0, step)
    # A negative step stops at -1 to mean "past the front", which as a slice bound would
    # count from the end: write it as None.
    return slice(start, stop if stop >= 0 else None, step)
