"""simdjson's reading of a large body is orjson's, with large numeric arrays as ``np.array``
reads them; every body it is unsure of is left to orjson."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.jsonarrays import (
    COUNT_STEP,
    MAX_NODES,
    MAX_ROWS,
    MIN_VALUES,
    count_bytes,
    loads_arrays,
)


def same(got: Any, expected: Any) -> None:
    """``got`` is ``expected`` (orjson's reading), its numpy arrays being ``np.array`` of
    the lists they stand for, dtype included."""
    if isinstance(got, np.ndarray):
        want = np.array(expected)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(got, dict):
        assert isinstance(expected, dict) and list(got) == list(expected)
        for key in got:
            same(got[key], expected[key])
    elif isinstance(got, list):
        assert isinstance(expected, list) and len(got) == len(expected)
        for item, want in zip(got, expected, strict=True):
            same(item, want)
    else:
        assert type(got) is type(expected) and got == expected


def arrays_in(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return 1
    if isinstance(value, dict):
        return sum(arrays_in(item) for item in value.values())
    if isinstance(value, list):
        return sum(arrays_in(item) for item in value)
    return 0


def body(tensor: Any, **extra: Any) -> bytes:
    return orjson.dumps({"inputs": {"a": tensor}, "steps": [{"op": "clone", "x": "a"}], **extra})


@pytest.mark.parametrize(
    "array",
    [
        np.arange(5000, dtype=np.int64).reshape(50, 100),
        np.linspace(-1, 1, 3000),
        np.random.default_rng(0).standard_normal((4, 8, 64)).astype(np.float32),
        np.array([-(2**63), 2**63 - 1] * 600),
        np.array([0.0, -0.0, 5e-324, 1.7976931348623157e308] * 300),
        np.arange(1024).reshape(4, 4, *(2,) * 6),
    ],
    ids=["int-matrix", "floats", "float32-3d", "int64-range", "float-edges", "8-dims"],
)
def test_a_large_regular_array_is_read_into_numpy_as_np_array_reads_its_lists(
    array: np.ndarray,
) -> None:
    raw = orjson.dumps(
        {"x": {"data": array, "dtype": "float32"}}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    read = loads_arrays(raw)
    assert read is not None
    data, count = read
    assert count == 1 and isinstance(data["x"]["data"], np.ndarray)
    same(data, orjson.loads(raw))


def test_mixed_integers_and_floats_read_as_float64() -> None:
    values = [100, 2.125] * 600
    read = loads_arrays(body(values))
    assert read is not None and read[0]["inputs"]["a"].dtype == np.float64
    same(read[0], orjson.loads(body(values)))


def test_small_arrays_and_everything_else_are_python_values() -> None:
    raw = orjson.dumps(
        {"a": [1, 2, 3], "b": [[True, False]] * 600, "c": "[x]", "[k": None, "d": [{"e": 1.5}]}
    )
    read = loads_arrays(raw)
    assert read is not None and read[1] == 0
    assert read[0] == orjson.loads(raw)


def big(rows: int = 40, columns: int = 40) -> list[list[Any]]:
    return np.arange(rows * columns).reshape(rows, columns).tolist()


def with_item(item: Any, row: int = 7, column: int = 3) -> list[list[Any]]:
    values = big()
    values[row][column] = item
    return values


UNSURE = {
    "a list hidden in a row": with_item([5]),
    "an empty list in a row": with_item([]),
    "a ragged row": [*big()[:-1], big()[0][:-1]],
    "a ragged row that keeps the count": [*big()[:-2], big()[0][:-1], [*big()[0], 1]],
    "a number where a row is": [*big()[:-1], 5],
    "a boolean": with_item(True),
    "a null": with_item(None),
    "a string": with_item("NaN"),
    "an unsigned 64-bit integer": [2**64 - 1] * 1100,
    "negative and unsigned 64-bit integers": [-1, 2**64 - 1] * 600,
    "an integer past 64 bits": None,
    "a number past doubles": None,
    "an escaped bracket": None,
    "not JSON": None,
    "a key with a NUL": None,
    "a key twice": None,
    "too many rows": [[1.0]] * (MAX_ROWS + 1),
    "too many other values": [[True]] * (MAX_NODES + 1),
    "too deep": None,
    "small integers (memory)": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 0] * 100] * 4,
}


@pytest.mark.parametrize("case", list(UNSURE))
def test_bodies_it_is_unsure_of_are_left_to_orjson(case: str) -> None:
    raw = {
        "a number past doubles": b'{"x": [1e400' + b", 1.5" * 2000 + b"]}",
        "an integer past 64 bits": b'{"x": [18446744073709551616' + b", 1" * 2000 + b"]}",
        "an escaped bracket": b'{"x": "\\u005b", "y": ' + orjson.dumps(with_item([5])) + b"}",
        "not JSON": body(big())[:-1],
        "a key with a NUL": body(big(), **{"a\x00b": 1}),
        "a key twice": b'{"k": 1, "k": 2, "x": ' + orjson.dumps(big()) + b"}",
        "too deep": b"[" * 100 + b"]" * 100,
    }.get(case) or body(UNSURE[case])
    assert loads_arrays(raw) is None


def test_an_array_nested_deeper_than_a_tensor_may_be_is_left_as_lists() -> None:
    values = np.zeros((2,) * 11, dtype=np.int64).tolist()
    read = loads_arrays(body(values))
    assert read is not None and read[1] == 0
    assert read[0] == orjson.loads(body(values))


ODD_ITEMS = st.sampled_from(
    [True, None, "x", "[", [], [1], [[1]], 2**63, 2**64 - 1, -(2**63), 1.5, -0.0, 1e308]
)


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    """A large nested list of numbers, and whether one odd item or row was put in."""
    shape = draw(st.lists(st.integers(1, 12), min_size=1, max_size=4))
    shape[-1] = max(shape[-1], -(-MIN_VALUES // int(np.prod(shape[:-1]))))
    kind = draw(st.sampled_from(["int", "float", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = int(np.prod(shape))
    values: np.ndarray = (
        rng.integers(-(2**62), 2**62, size)
        if kind == "int"
        else rng.standard_normal(size) * 10.0 ** rng.integers(-300, 300, size)
    )
    nested: Any = values.reshape(shape).tolist()
    if kind == "mixed":
        nested = np.array(nested, dtype=object).ravel()
        nested[:: max(1, size // 7)] = 3
        nested = nested.reshape(shape).tolist()
    odd = draw(st.booleans())
    if odd:
        index = [draw(st.integers(0, n - 1)) for n in shape]
        parent = nested
        for i in index[:-1]:
            parent = parent[i]
        if draw(st.booleans()):
            parent[index[-1]] = draw(ODD_ITEMS)
        elif len(index) > 1:
            del parent[index[-1]]  # a ragged row
    return nested, odd


@settings(max_examples=60, deadline=None)
@given(tensors(), st.text(max_size=5))
def test_any_body_reads_as_orjson_reads_it(drawn: tuple[Any, bool], name: str) -> None:
    tensor, odd = drawn
    raw = body(tensor, name={name: [name, tensor]})
    read = loads_arrays(raw)
    if read is None:
        assert odd or "\x00" in name, "a regular array of numbers is read by simdjson"
        return
    data, count = read
    assert count == arrays_in(data)
    same(data, orjson.loads(raw))


@pytest.mark.parametrize(
    "size", [0, 1, COUNT_STEP - 1, COUNT_STEP, COUNT_STEP + 1, 5 * COUNT_STEP + 7]
)
def test_count_bytes_counts_as_bytes_count_does_across_its_steps(size: int) -> None:
    raw = np.random.default_rng(size).choice(np.frombuffer(b"[{,\\a", np.uint8), size).tobytes()
    for chars in ([b"["], [b","], [b"[", b"{"], [b",", b"\\"]):
        expected = sum(raw.count(char) for char in chars)
        assert count_bytes(raw, *(ord(c) for c in chars)) == expected
        assert count_bytes(memoryview(bytearray(raw)), *(ord(c) for c in chars)) == expected
