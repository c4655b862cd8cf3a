"""Large JSON bodies read by simdjson, their numeric arrays straight into numpy.

orjson reads a 1000×1000 tensor written as lists into a million Python floats, which numpy
then reads again: ~100 ms. simdjson (pysimdjson) reads the text into its own tape, from which
a regular array of numbers is exported as one buffer: ~40 ms for the same body. Everything
else in the body (the few keys, names and small lists around the tensors) is built as the
Python values orjson would have built.

Only what both readers read identically is read here; anything else returns ``None`` and the
caller reads the body with :func:`service.codec.loads_json`, so every error, and every body
this module is unsure of, is worded and read exactly as before:

* a body of values shorter than :data:`MIN_VALUE_BYTES` on average (small integers):
  simdjson's tape takes 16 bytes a number, and a 64 MB body of ``0,0,…`` would take about
  1 GB to read (orjson's objects take less);
* a text simdjson refuses (invalid JSON, integers past 64 bits, numbers past doubles, lone
  surrogates, invalid UTF-8), or nested more than :data:`MAX_DEPTH` levels;
* a body of more than :data:`MAX_NODES` values outside the arrays read into numpy, or an
  object of more than :data:`MAX_KEYS` keys, with a key twice or a key simdjson cannot
  look up (one with a NUL);
* an array whose values ``np.array`` would not read as int64 or float64 (booleans, nulls,
  strings, unsigned 64-bit integers), or whose nesting is not regular.

An array is read into numpy when its first path down (``a[0][0]…``) promises at least
:data:`MIN_VALUES` values. Its regularity is then proved without looking at each value:
every list above the innermost has the right length and holds lists of the right length (a
Python loop over the rows, at most :data:`MAX_ROWS` of them), simdjson's buffer holds exactly
the shape's count of numbers, and the number of ``[`` in the whole text is the number of
lists this reading found plus those inside strings, so no list hides inside an innermost row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson

MIN_VALUES = 1024
"""Arrays of at least this many values (by their first path) are read into numpy."""
MAX_ROWS = 1 << 16
"""At most this many innermost lists per array: their lengths are checked one by one."""
MAX_NODES = 1 << 16
"""At most this many other values in a body: each is built as a Python object."""
MAX_KEYS = 1024
"""At most this many keys per object (each is looked up by a scan of the object's keys)."""
MAX_DEPTH = 64
"""Deeper nesting is left to orjson (this reading recurses)."""
MAX_NDIM = 8
"""Arrays nested deeper are built as lists, for the codec to refuse."""
MIN_VALUE_BYTES = 4
"""Bodies with more than one comma in this many bytes are left to orjson."""
_OPEN = ord("[")
_COMMA = ord(",")
_BACKSLASH = ord("\\")
_ESCAPED_OPEN = (b"\\u005b", b"\\u005B")
COUNT_STEP = 1 << 16
""":func:`count_bytes` compares this many bytes at a time."""


def count_bytes(raw: bytes | bytearray | memoryview, *chars: int) -> int:
    """How many bytes of ``raw`` are one of ``chars``: numpy's comparisons, which let go of
    the interpreter lock, :data:`COUNT_STEP` bytes at a time into two small buffers used
    again and again. (``np.count_nonzero(text == c)`` takes a mask as large as the text,
    and on a VM the kernel's page faults for tens of MB of fresh memory cost more than
    the comparisons.)"""
    text = np.frombuffer(raw, dtype=np.uint8)
    hits = np.empty(min(len(text), COUNT_STEP), dtype=np.bool_)
    other = np.empty_like(hits) if len(chars) > 1 else hits
    total = 0
    for start in range(0, len(text), COUNT_STEP):
        part = text[start : start + COUNT_STEP]
        mask = hits[: len(part)]
        np.equal(part, chars[0], out=mask)
        for char in chars[1:]:
            more = other[: len(part)]
            np.equal(part, char, out=more)
            np.logical_or(mask, more, out=mask)
        total += int(np.count_nonzero(mask))
    return total


_BUFFERS: tuple[tuple[str, type[np.generic]], ...] = (
    ("i", np.int64),
    ("u", np.uint64),
    ("d", np.float64),
)


class _Unsure(Exception):
    """The body is read by orjson instead."""


@dataclass
class _Reading:
    lists: int = 0
    """Lists read, those inside the numpy arrays included."""
    string_opens: int = 0
    """``[`` characters inside keys and strings."""
    nodes: int = 0
    arrays: int = 0


def loads_arrays(raw: bytes | bytearray | memoryview) -> tuple[Any, int] | None:
    """The body's JSON with its large regular numeric arrays as numpy arrays (int64 or
    float64, as ``np.array`` reads the lists), and how many there are; ``None`` where the
    body is to be read by orjson."""
    if count_bytes(raw, _COMMA) * MIN_VALUE_BYTES > len(raw):
        return None
    if count_bytes(raw, _BACKSLASH) and any(e in bytes(raw) for e in _ESCAPED_OPEN):
        return None  # a "[" written as an escape would upset the count of lists
    reading = _Reading()
    try:
        document = simdjson.Parser().parse(raw)
        data = _value(document, reading, 0)
    except Exception:  # any doubt, such as a key with a NUL (which cannot be looked up)
        return None
    del document
    if count_bytes(raw, _OPEN) != reading.lists + reading.string_opens:
        return None
    return data, reading.arrays


def _value(node: Any, reading: _Reading, depth: int) -> Any:
    reading.nodes += 1
    if reading.nodes > MAX_NODES or depth > MAX_DEPTH:
        raise _Unsure
    if isinstance(node, simdjson.Object):
        # Values are looked up by key (items() would build the whole subtree in Python),
        # which takes the first of duplicate keys where orjson takes the last.
        keys = list(node)
        if len(keys) > MAX_KEYS or len(set(keys)) < len(keys):
            raise _Unsure
        found = {}
        for key in keys:
            reading.string_opens += key.count("[")
            found[key] = _value(node[key], reading, depth + 1)
        return found
    if isinstance(node, simdjson.Array):
        array = _numbers(node, reading)
        if array is not None:
            return array
        reading.lists += 1
        return [_value(item, reading, depth + 1) for item in node]
    if isinstance(node, str):
        reading.string_opens += node.count("[")
    return node


def _numbers(node: Any, reading: _Reading) -> np.ndarray | None:
    """The array as numpy, if it is large, regular and numeric; ``None`` if it is small."""
    shape: list[int] = []
    item = node
    while isinstance(item, simdjson.Array):
        if len(item) == 0 or len(shape) == MAX_NDIM:
            return None  # small, or an error the codec words
        shape.append(len(item))
        item = item[0]
    if isinstance(item, bool) or not isinstance(item, int | float):
        return None  # not numbers: built as Python values
    if math.prod(shape) < MIN_VALUES:
        return None
    if math.prod(shape[:-1]) > MAX_ROWS:
        raise _Unsure
    _check_rows(node, shape)
    for of_type, dtype in _BUFFERS:
        try:
            values = np.frombuffer(node.as_buffer(of_type=of_type), dtype=dtype)
        except (TypeError, ValueError):
            continue
        break
    else:
        raise _Unsure  # booleans, nulls or strings: np.array's own reading
    if values.dtype == np.uint64 or values.size != math.prod(shape):
        raise _Unsure  # np.array reads uint64; a list nested in a row
    if values.dtype == np.float64 and not _float_read(values):
        raise _Unsure
    reading.lists += sum(math.prod(shape[:level]) for level in range(len(shape)))
    reading.arrays += 1
    return values.reshape(shape)


def _check_rows(node: Any, shape: list[int], level: int = 0) -> None:
    if level + 1 == len(shape):
        return
    size = shape[level + 1]
    for row in node:
        if not isinstance(row, simdjson.Array) or len(row) != size:
            raise _Unsure  # ragged, or mixed depths: the codec words the error
        _check_rows(row, shape, level + 1)


def _float_read(values: np.ndarray) -> bool:
    """Whether ``np.array`` reads these values as float64. simdjson's numbers fit neither
    int64 nor uint64, so a float is among them, or integers both negative and past int64,
    which numpy versions read differently (as float64, as objects, or not at all): values
    like those, all whole, are left to orjson and ``np.array``."""
    if values.min() >= 0 or values.max() < 2.0**63:
        return True
    return not np.array_equal(values, np.trunc(values))
