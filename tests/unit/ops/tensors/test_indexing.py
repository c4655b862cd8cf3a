"""Tests for the text index parser in :mod:`service.ops.tensors.indexing`."""

from __future__ import annotations

import re
import warnings
from types import EllipsisType
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.tensors import INDEX_PATTERN
from service.ops.tensors.indexing import (
    IndexItem,
    IndexParseError,
    check_index,
    format_index,
    parse_index,
    resolve_slice,
)

S = slice
E = Ellipsis


def tutorial_array() -> np.ndarray:
    """The tutorial's tensor: ``torch.arange(16).reshape(2, 2, 4)``."""
    return np.arange(16).reshape(2, 2, 4)


def _steps_positive(index: tuple[IndexItem, ...]) -> bool:
    return all(not isinstance(i, slice) or i.step is None or i.step > 0 for i in index)


def _assert_same_result(arr: np.ndarray, parsed: tuple[IndexItem, ...], original: Any) -> None:
    expected = np.asarray(arr[original])
    got = np.asarray(arr[parsed])
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)
    if _steps_positive(parsed):
        tensor_result = torch.from_numpy(arr)[parsed]
        assert isinstance(tensor_result, torch.Tensor)
        got_t = tensor_result.numpy()
        assert got_t.shape == expected.shape
        assert np.array_equal(got_t, expected)


# --------------------------------------------------------------------------------------------
# Good examples
# --------------------------------------------------------------------------------------------

GOOD: list[tuple[str, tuple[IndexItem, ...]]] = [
    ("[2]", (2,)),
    ("[1]", (1,)),
    ("1", (1,)),
    ("[:, 1]", (S(None), 1)),
    (":, 1", (S(None), 1)),
    ("[:, 1, :-1]", (S(None), 1, S(None, -1))),
    ("[..., ::2, None]", (E, S(None, None, 2), None)),
    ("[-1]", (-1,)),
    ("[+1]", (1,)),
    ("[- 1]", (-1,)),
    (" [ 1 : : 2 , None ] ", (S(1, None, 2), None)),
    ("[]", ()),
    ("", ()),
    ("   ", ()),
    ("[ ]", ()),
    ("::-1", (S(None, None, -1),)),
    ("[::-1, ..., 0]", (S(None, None, -1), E, 0)),
    ("[1,]", (1,)),
    ("1,", (1,)),
    ("[0, 1, 2,]", (0, 1, 2)),
    ("[...]", (E,)),
    ("...", (E,)),
    ("[None]", (None,)),
    ("[None, None, ...]", (None, None, E)),
    ("[:]", (S(None),)),
    ("[::]", (S(None, None, None),)),
    ("[1:]", (S(1, None),)),
    ("[:1]", (S(None, 1),)),
    ("[0:2:1]", (S(0, 2, 1),)),
    ("[-3:-1]", (S(-3, -1),)),
    ("[None:None:None]", (S(None, None, None),)),
    ("[None:2]", (S(None, 2),)),
    ("[1, 1, 3]", (1, 1, 3)),
    ("[1,1,-4]", (1, 1, -4)),
    ("[0,\t:,\n1:3]", (0, S(None), S(1, 3))),
    ("[001]", (1,)),
    ("[:100]", (S(None, 100),)),
    ("[-100:]", (S(-100, None),)),
    ("[1:0]", (S(1, 0),)),
]

OUT_OF_RANGE_FOR_TUTORIAL = {"[2]"}


@pytest.mark.parametrize(("text", "expected"), GOOD, ids=[repr(t) for t, _ in GOOD])
def test_parse_good_examples(text: str, expected: tuple[IndexItem, ...]) -> None:
    parsed = parse_index(text)
    assert parsed == expected
    assert all(type(a) is type(b) for a, b in zip(parsed, expected, strict=True))
    arr = tutorial_array()
    if text in OUT_OF_RANGE_FOR_TUTORIAL:
        # Parses fine, but the tutorial tensor's first dimension has size 2: every layer agrees.
        with pytest.raises(IndexError, match="out of range"):
            check_index(parsed, arr.shape)
        with pytest.raises(IndexError):
            arr[parsed]
        with pytest.raises(IndexError):
            torch.from_numpy(arr)[parsed]
        return
    check_index(parsed, arr.shape)
    _assert_same_result(arr, parsed, expected)


def test_negative_step_parses_but_torch_rejects_it() -> None:
    parsed = parse_index("::-1")
    arr = tutorial_array()
    check_index(parsed, arr.shape)  # legal NumPy, so check_index lets it through
    assert np.array_equal(arr[parsed], arr[::-1])
    with pytest.raises(ValueError, match="step must be greater than zero"):
        torch.from_numpy(arr)[parsed]


def test_single_item_indexes_like_the_bare_item() -> None:
    arr = tutorial_array()
    assert np.array_equal(arr[parse_index("[1]")], arr[1])
    assert np.array_equal(arr[parse_index("[:, 1]")], arr[:, 1])


def test_limits_at_the_boundary_are_accepted() -> None:
    assert parse_index("1," * 64) == (1,) * 64
    assert parse_index("1, " * 3, max_items=3) == (1, 1, 1)
    text = " " * 999 + "1"
    assert parse_index(text) == (1,)
    assert parse_index("9" * 19) == (int("9" * 19),)
    assert parse_index("-" + "9" * 19) == (-int("9" * 19),)


# --------------------------------------------------------------------------------------------
# Bad examples
# --------------------------------------------------------------------------------------------

BAD: list[tuple[str, int, str]] = [
    ("[x]", 1, "unknown name 'x'"),
    ("[:, x]", 4, "unknown name 'x'"),
    ("[1.5]", 1, "floating-point"),
    ("1.", 0, "floating-point"),
    ("[1e5]", 2, "decimal digits"),
    ("[0x10]", 2, "decimal digits"),
    ("[1_000]", 2, "decimal digits"),
    ("[1,,2]", 3, "empty index item"),
    (",", 0, "empty index item"),
    ("[,]", 1, "empty index item"),
    ("1,,", 2, "empty index item"),
    ("[...,...]", 5, "only one"),
    ("[..., 1, ...]", 9, "only one"),
    ("[1:2:3:4]", 6, "too many ':'"),
    ("::::", 2, "too many ':'"),
    ("[1", 2, "missing ']'"),
    ("[", 1, "missing ']'"),
    ("1]", 1, "unbalanced ']'"),
    ("]", 0, "unbalanced ']'"),
    ("[1]]", 3, "unbalanced ']'"),
    ("[[1]]", 1, "nested brackets"),
    ("[1][2]", 3, "nothing after"),
    ("[1 2]", 3, "expected ','"),
    ("[None None]", 6, "expected ','"),
    ("__import__('os')", 0, "unknown name '__import__'"),
    ("__import__('os').system('ls')", 0, "unknown name"),
    ("True", 0, "unknown name 'True'"),
    ("[1, (2)]", 4, "unexpected character '('"),
    ("[-]", 2, "expected digits after the sign"),
    ("[--1]", 2, "expected digits after the sign"),
    ("[-x]", 2, "expected digits after the sign"),
    ("[.]", 1, "three dots"),
    ("[.5]", 1, "floating-point"),
    ("[1:.5]", 3, "floating-point"),
    ("[..]", 1, "three dots"),
    ("[....]", 4, "three dots"),
    ("[...:1]", 4, "cannot be part of a slice"),
    ("[1:...]", 3, "cannot be part of a slice"),
    ("[1;2]", 2, "unexpected character ';'"),
    ("[\u0663]", 1, "unexpected character"),  # ARABIC-INDIC DIGIT THREE
    ("[\x00]", 1, "U+0000"),
    ("[" + "9" * 20 + "]", 1, "at most 19"),
    ("1" * 1001, 1000, "at most 1000"),
    ("1," * 500 + "1" * 100, 1000, "at most 1000"),
    ("0," * 65, 128, "at most 64"),
]


@pytest.mark.parametrize(
    ("text", "position", "fragment"), BAD, ids=[repr(t[:40]) for t, _, _ in BAD]
)
def test_parse_bad_examples(text: str, position: int, fragment: str) -> None:
    with pytest.raises(IndexParseError) as info:
        parse_index(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.position == position, str(err)
    assert fragment in str(err)
    if 0 <= position < 1000:
        assert f"column {position}" in str(err)


def test_error_message_is_helpful() -> None:
    with pytest.raises(IndexParseError) as info:
        parse_index("[:, x]")
    message = str(info.value)
    assert "column 4" in message
    assert "integers" in message
    assert "slices" in message
    assert "None" in message


def test_custom_limits() -> None:
    with pytest.raises(IndexParseError) as info:
        parse_index("1, 2, 3", max_items=2)
    assert info.value.position == 6
    with pytest.raises(IndexParseError) as info:
        parse_index("[1, 2]", max_length=5)
    assert info.value.position == 5


def test_non_text_is_rejected() -> None:
    with pytest.raises(IndexParseError):
        parse_index(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Property: rendered valid indices parse back to themselves
# --------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
spaces = st.sampled_from(["", "", " ", "  ", "\t", "\n"])


@st.composite
def valid_indices(
    draw: st.DrawFn, shape: tuple[int, ...], negative_steps: bool = True
) -> tuple[IndexItem, ...]:
    """A basic index that fits ``shape``: ints in range, slices, None and at most one ``...``."""
    ndim = len(shape)
    k = draw(st.integers(0, ndim))
    use_ellipsis = draw(st.booleans())
    before = draw(st.integers(0, k)) if use_ellipsis else k
    dims = list(range(before)) + list(range(ndim - (k - before), ndim))

    def consuming(size: int) -> IndexItem:
        bound = st.none() | st.integers(-size - 2, size + 2)
        step = st.integers(-3, 3).filter(bool) if negative_steps else st.integers(1, 3)
        return draw(st.integers(-size, size - 1) | st.builds(slice, bound, bound, st.none() | step))

    items: list[IndexItem] = [consuming(shape[d]) for d in dims]
    if use_ellipsis:
        items.insert(before, Ellipsis)
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


@st.composite
def render_int(draw: st.DrawFn, value: int) -> str:
    if value < 0:
        return "-" + draw(spaces) + str(-value)
    return draw(st.sampled_from(["", "+", "+ "])) + str(value)


@st.composite
def render_part(draw: st.DrawFn, value: int | None) -> str:
    if value is None:
        return draw(st.sampled_from(["", "", "None"]))
    return draw(render_int(value))


@st.composite
def render_item(draw: st.DrawFn, item: IndexItem) -> str:
    if item is None:
        return "None"
    if isinstance(item, EllipsisType):
        return "..."
    if isinstance(item, slice):
        text = draw(render_part(item.start)) + draw(spaces) + ":" + draw(spaces)
        text += draw(render_part(item.stop))
        if item.step is not None:
            text += draw(spaces) + ":" + draw(spaces) + draw(render_int(item.step))
        else:
            text += draw(st.sampled_from(["", ":", ": ", ":None"]))
        return text
    return draw(render_int(item))


@st.composite
def render_index(draw: st.DrawFn, index: tuple[IndexItem, ...]) -> str:
    parts = [draw(spaces) + draw(render_item(item)) + draw(spaces) for item in index]
    text = ",".join(parts)
    trailing_comma = draw(st.booleans())
    if index and trailing_comma:
        text += "," + draw(spaces)
    if draw(st.booleans()):
        text = draw(spaces) + "[" + text + "]" + draw(spaces)
    return text


@st.composite
def shape_index_text(
    draw: st.DrawFn, negative_steps: bool = True
) -> tuple[tuple[int, ...], tuple[IndexItem, ...], str]:
    shape = draw(shapes)
    index = draw(valid_indices(shape, negative_steps))
    return shape, index, draw(render_index(index))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(shape_index_text())
def test_rendered_index_round_trips(
    case: tuple[tuple[int, ...], tuple[IndexItem, ...], str],
) -> None:
    shape, original, text = case
    parsed = parse_index(text)
    assert parsed == original, text
    check_index(parsed, shape)
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    _assert_same_result(arr, parsed, original)


@settings(max_examples=200)
@given(shape_index_text(negative_steps=False))
def test_positive_step_indices_match_torch(
    case: tuple[tuple[int, ...], tuple[IndexItem, ...], str],
) -> None:
    shape, original, text = case
    parsed = parse_index(text)
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    assert _steps_positive(parsed)
    got = torch.from_numpy(arr)[parsed].numpy()
    expected = np.asarray(arr[original])
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


@given(st.lists(st.integers(-50, 50) | st.none() | st.just(Ellipsis), max_size=5))
def test_format_index_round_trips(items: list[int | EllipsisType | None]) -> None:
    index: tuple[IndexItem, ...] = tuple(items)
    if sum(1 for i in index if i is Ellipsis) <= 1:
        assert parse_index(format_index(index)) == index


# --------------------------------------------------------------------------------------------
# Property: arbitrary text only ever gives a tuple or IndexParseError
# --------------------------------------------------------------------------------------------

GRAMMAR_ALPHABET = "[]:,.+-0123456789 \tNonexe_(')"


def _check_total(text: str) -> None:
    try:
        result = parse_index(text)
    except IndexParseError as err:
        assert 0 <= err.position <= len(text)
        assert str(err)
        return
    assert isinstance(result, tuple)
    assert sum(1 for i in result if i is Ellipsis) <= 1
    for item in result:
        assert item is None or item is Ellipsis or type(item) in (int, slice)
        if isinstance(item, slice):
            for part in (item.start, item.stop, item.step):
                assert part is None or type(part) is int


@settings(max_examples=500)
@given(st.text())
def test_arbitrary_text_never_crashes(text: str) -> None:
    _check_total(text)


@settings(max_examples=1000)
@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=40))
def test_grammar_like_text_never_crashes(text: str) -> None:
    _check_total(text)


@settings(max_examples=300)
@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=30))
def test_parsed_text_agrees_with_python_where_python_accepts_it(text: str) -> None:
    """Where both accept the text, the parser agrees with Python's own subscript syntax."""

    class Probe:
        def __getitem__(self, key: object) -> object:
            return key

    try:
        # Test-only oracle on generated text from a tiny alphabet (no names but None).
        if any(c.isalpha() for c in text.replace("None", "")):
            return
        stripped = text.strip()
        # Outer brackets are optional in our grammar, so "[1]" is the subscript itself.
        source = f"Probe(){stripped}" if stripped.startswith("[") else f"Probe()[{text}]"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = eval(source, {"__builtins__": {}, "Probe": Probe})
    except Exception:
        return
    try:
        parsed = parse_index(text)
    except IndexParseError:
        return  # we are stricter than Python in places (e.g. '--1', '1.', '(1)')
    if not isinstance(expected, tuple):
        expected = (expected,)
    assert parsed == expected


# --------------------------------------------------------------------------------------------
# check_index
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "shape", "fragment"),
    [
        ((2,), (2, 2, 4), "out of range"),
        ((-3,), (2, 2, 4), "out of range"),
        ((0, 0, 4), (2, 2, 4), "out of range"),
        ((..., 4), (2, 2, 4), "out of range"),
        ((..., -5), (2, 2, 4), "out of range"),
        ((0,), (0, 3), "size 0"),
        ((0, 0, 0, 0), (2, 2, 4), "too many indices"),
        ((S(None), S(None), S(None), None, 1), (2, 2, 4), "too many indices"),
        ((0,), (), "too many indices"),
        ((..., ...), (2, 2, 4), "only one ellipsis"),
        ((S(None, None, 0),), (2, 2, 4), "step cannot be zero"),
        ((1.5,), (2, 2, 4), "not a basic index"),
        ((True,), (2, 2, 4), "not a basic index"),
        ((S(0.5, None),), (2, 2, 4), "must be an integer"),
    ],
)
def test_check_index_rejects(
    index: tuple[IndexItem, ...], shape: tuple[int, ...], fragment: str
) -> None:
    with pytest.raises(IndexError, match=fragment):
        check_index(index, shape)


@pytest.mark.parametrize(
    ("index", "shape"),
    [
        ((), (2, 2, 4)),
        ((1, 1, 3), (2, 2, 4)),
        ((-2, -2, -4), (2, 2, 4)),
        ((..., 3), (2, 2, 4)),
        ((1, ..., 3), (2, 2, 4)),
        ((None, 1, None, ..., None, 3, None), (2, 2, 4)),
        ((S(None, None, -1), S(10, -10)), (2, 2, 4)),
        ((...,), ()),
        ((None,), ()),
        ((S(None),), (0,)),
        ((..., 0), (0, 1)),
    ],
)
def test_check_index_accepts(index: tuple[IndexItem, ...], shape: tuple[int, ...]) -> None:
    check_index(index, shape)
    arr = np.zeros(shape)
    arr[index]  # must not raise


any_items = (
    st.integers(-7, 7)
    | st.builds(
        slice,
        st.none() | st.integers(-7, 7),
        st.none() | st.integers(-7, 7),
        st.none() | st.integers(-3, 3),
    )
    | st.none()
    | st.just(Ellipsis)
)


@settings(max_examples=1000)
@given(
    st.lists(st.integers(0, 5), max_size=4).map(tuple),
    st.lists(any_items, max_size=6).map(tuple),
)
def test_check_index_agrees_with_numpy(
    shape: tuple[int, ...], index: tuple[IndexItem, ...]
) -> None:
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    try:
        expected = arr[index]
    except (IndexError, ValueError):
        numpy_ok = False
    else:
        numpy_ok = True
    try:
        resolved = check_index(index, shape)
    except IndexError:
        check_ok = False
    else:
        check_ok = True
        assert np.array_equal(arr[resolved], expected), (shape, index, resolved)
    assert check_ok == numpy_ok, (shape, index)


# --------------------------------------------------------------------------------------------
# Resolution: bounds and steps up to +-2**63 give NumPy's answer in torch
# --------------------------------------------------------------------------------------------

INT64_MAX = 2**63 - 1
HUGE = [INT64_MAX, 2**63, -(2**63), -INT64_MAX, 10**19 - 1, -(10**19 - 1), 2**62, 2**31]
"""Parts at the edges of int64 and past them (the grammar reads up to 19 digits)."""

huge_parts = st.integers(-(10**19 - 1), 10**19 - 1) | st.sampled_from(HUGE) | st.integers(-9, 9)
huge_steps = huge_parts.filter(bool)
zero_shapes = st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple)


@st.composite
def huge_indices(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[IndexItem, ...]:
    """Slices with any bounds and steps up to 19 digits over ``shape``, integers in range,
    at most one ``...`` (the items after it index the last dimensions) and a ``None``."""
    ndim = len(shape)
    k = draw(st.integers(0, ndim))
    use_ellipsis = draw(st.booleans())
    before = draw(st.integers(0, k)) if use_ellipsis else k
    dims = list(range(before)) + list(range(ndim - (k - before), ndim))
    items: list[IndexItem] = []
    for dim in dims:
        if shape[dim] and draw(st.booleans()):
            items.append(draw(st.integers(-shape[dim], shape[dim] - 1)))
        else:
            part = st.none() | huge_parts
            items.append(slice(draw(part), draw(part), draw(st.none() | huge_steps)))
    if use_ellipsis:
        items.insert(before, Ellipsis)
    if draw(st.booleans()):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


@st.composite
def huge_cases(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[IndexItem, ...]]:
    shape = draw(zero_shapes)
    return shape, draw(huge_indices(shape))


@settings(max_examples=600)
@given(huge_cases())
def test_huge_parts_give_numpys_answer(
    case: tuple[tuple[int, ...], tuple[IndexItem, ...]],
) -> None:
    """Text with steps and bounds up to +-2**63 (and the 19-digit numbers past them), on shapes
    with zeros: the resolved index selects NumPy's elements, in torch as in NumPy."""
    shape, original = case
    text = format_index(original)
    resolved = check_index(parse_index(text), shape)
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    expected = arr[original]
    assert np.array_equal(arr[resolved], expected), (shape, text, resolved)
    assert arr[resolved].shape == expected.shape
    for item in resolved:
        if isinstance(item, slice):
            parts = (item.start, item.stop, item.step)
            assert all(part is None or abs(part) <= max(shape) + 1 for part in parts), resolved
    if _steps_positive(resolved):
        got = torch.from_numpy(arr)[resolved]
        assert tuple(got.shape) == expected.shape, (shape, text, resolved)
        assert np.array_equal(got.numpy(), expected)


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("[::9223372036854775807]", (4,)),  # torch alone: [] (NumPy: [0])
        ("[::9223372036854775807]", (4, 4)),  # torch alone: "as_strided: Negative strides"
        ("[:, ::9223372036854775807]", (0, 2)),  # torch alone: a [0, -1] tensor
        ("[9223372036854775807:]", (3,)),
        ("[-9999999999999999999:9999999999999999999]", (3, 2)),
        ("[1::4611686018427387904]", (5,)),
        ("[..., ::9999999999999999999]", (2, 0, 3)),
    ],
)
def test_reproducers_give_numpys_answer(text: str, shape: tuple[int, ...]) -> None:
    index = parse_index(text)
    resolved = check_index(index, shape)
    arr = np.arange(int(np.prod(shape))).reshape(shape)
    got = torch.from_numpy(arr)[resolved]
    assert tuple(got.shape) == arr[index].shape
    assert np.array_equal(got.numpy(), arr[index])


@pytest.mark.parametrize(
    ("item", "size", "expected"),
    [
        (S(None, None, INT64_MAX), 4, S(0, 4, 4)),
        (S(None, None, -INT64_MAX), 4, S(3, None, -4)),
        (S(-(10**19), 10**19), 3, S(0, 3, 1)),
        (S(None, None, INT64_MAX), 0, S(0, 0, 1)),
        (S(-100, None, -1), 5, S(0, 0, -1)),  # starts before the front: nothing
    ],
)
def test_resolve_slice(item: slice, size: int, expected: slice) -> None:
    assert resolve_slice(item, size) == expected
    arr = np.arange(size)
    assert np.array_equal(arr[resolve_slice(item, size)], arr[item])


# --------------------------------------------------------------------------------------------
# The published pattern of an index text says what the parser (and torch) take
# --------------------------------------------------------------------------------------------

INDEX_RE = re.compile(INDEX_PATTERN)


def _torch_takes(text: str) -> bool:
    """Whether the parser reads ``text`` into an index torch takes: steps positive."""
    try:
        index = parse_index(text)
    except IndexParseError:
        return False
    return _steps_positive(index) and all(
        not isinstance(item, slice) or item.step != 0 for item in index
    )


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.from_regex(INDEX_RE, fullmatch=True).filter(lambda text: len(text) <= 200))
def test_text_the_pattern_admits_is_parsed(text: str) -> None:
    assert _torch_takes(text) or len(parse_or_none(text) or ()) > 64, text


def parse_or_none(text: str) -> tuple[IndexItem, ...] | None:
    try:
        return parse_index(text, max_items=10**6)
    except IndexParseError:
        return None


@settings(max_examples=500)
@given(shape_index_text())
def test_indices_torch_takes_match_the_pattern(
    case: tuple[tuple[int, ...], tuple[IndexItem, ...], str],
) -> None:
    _, _, text = case
    assert bool(INDEX_RE.match(text)) == _torch_takes(text), text


@settings(max_examples=1000)
@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=30))
def test_the_pattern_and_the_parser_agree_on_any_text(text: str) -> None:
    assert bool(INDEX_RE.match(text)) == _torch_takes(text), text
