"""The expression language of ``POST /grad``: a documented subset of Python expressions.

The text is read by ``ast.parse(text, mode="eval")`` and walked by our own evaluator over an
allow-list of node types; it is never handed to ``eval``, ``exec`` or ``compile``. Grammar
(Python's own syntax and precedence; nothing else is accepted)::

    expr      := number | name | constant | "(" expr ")"
               | expr binop expr | "-" expr | "+" expr
               | expr compare expr                 -- one comparison, no chains
               | function "(" args ")"            -- a function from FUNCTIONS
               | expr "[" index "]"               -- constant indices and slices only
    binop     := "+" | "-" | "*" | "/" | "**" | "@" | "%"
    compare   := "<" | "<=" | ">" | ">=" | "==" | "!="
    args      := positional expressions, then keyword=expression; an argument may also be
                 None, or a tuple/list of integers (dimensions: ``sum(x, dim=(0, 1))``)
    index     := item ("," item)*; item := integer | start:stop:step | None | ...
    number    := an int or float literal (``2``, ``0.5``, ``1e-3``), True, False
    constant  := pi | e | inf
    name      := the name of an input

Semantics are torch's: a plain number next to a tensor keeps the tensor's dtype, ``%`` is
``torch.remainder``, ``max(x, y)`` is the elementwise maximum. Arithmetic between two plain
numbers is Python's, except that integers must stay within int64 (so ``9**9**9**9`` is refused
before it is computed) and nothing is folded ahead of evaluation.

Limits, from the configured :class:`~service.config.Limits` and checked before anything is
evaluated: ``max_expression_length`` characters, ``max_expression_nodes`` syntax nodes and
``max_expression_depth`` levels of nesting (a cheap scan bounds brackets before
``ast.parse`` sees the text). Over one, a 413 names it.

This module scans and parses the text (:func:`parse_expression`); :mod:`.check` checks the
tree, :mod:`.evaluate` evaluates it and :mod:`.functions` holds the functions it may call.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded
from service.ops.autograd.check import check_expression, depth_exceeded

_CHARACTERS = re.compile(r"[^A-Za-z0-9_ \t\r\n+\-*/%@<>=!()\[\],.:]")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_WORDS = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?"
)
_CHARACTER_PROBLEMS = {
    "'": "strings are not allowed",
    '"': "strings are not allowed",
    "{": "dicts and sets are not allowed",
    "}": "dicts and sets are not allowed",
    "#": "comments are not allowed",
    "\\": "backslashes are not allowed",
    ";": "only one expression is allowed (no ';')",
    "&": "bitwise operators are not supported",
    "|": "bitwise operators are not supported",
    "^": "bitwise operators are not supported; write ** for a power",
    "~": "bitwise operators are not supported",
}


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression: its text, its syntax tree and the input names it reads."""

    text: str
    tree: ast.Expression
    names: frozenset[str]
    nodes: int
    _line_starts: tuple[int, ...] = field(repr=False)

    def column(self, node: ast.AST) -> int:
        """0-based position of a node in the text."""
        lineno = getattr(node, "lineno", 1)
        return self._line_starts[lineno - 1] + getattr(node, "col_offset", 0)

    def source(self, node: ast.AST, limit: int = 60) -> str:
        """The node's text, shortened to ``limit`` characters."""
        text = ast.get_source_segment(self._source, node) or type(node).__name__
        return text if len(text) <= limit else text[: limit - 1] + "…"

    @property
    def _source(self) -> str:
        # The tree was parsed from the text without its leading whitespace.
        return self.text[self._line_starts[0] :]


def _line_starts(text: str, offset: int) -> tuple[int, ...]:
    starts = [offset]
    for index, char in enumerate(text):
        if char == "\n":
            starts.append(offset + index + 1)
    return tuple(starts)


def parse_expression(text: str, names: Iterable[str], *, limits: Limits) -> Expression:
    """Parse and check an expression over the input ``names``.

    Raises :class:`InvalidInput` (422, ``details.column`` says where) for a syntax error,
    a construct outside the language, an unknown name or function, or bad arguments; and
    :class:`LimitExceeded` (413) over the length, node or depth limit of ``limits``.
    """
    _scan(text, limits)
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    tree = _parse(stripped, offset, limits)
    expression = Expression(
        text=text,
        tree=tree,
        names=frozenset(),
        nodes=0,
        _line_starts=_line_starts(stripped, offset),
    )
    return check_expression(expression, names, limits=limits)


def _syntax(
    message: str, column: int, code: ErrorCode = ErrorCode.EXPRESSION_SYNTAX
) -> InvalidInput:
    return InvalidInput(message, details={"column": column}, code=code)


def _scan(text: str, limits: Limits) -> None:
    """Cheap checks before ``ast.parse``: length, characters, bracket nesting."""
    longest = limits.max_expression_length
    if len(text) > longest:
        raise LimitExceeded(
            "max_expression_length",
            longest,
            len(text),
            "the expression",
            message=f"the expression is {len(text):,} characters long but the limit "
            f"max_expression_length is {longest:,}",
        )
    if not text.strip():
        raise _syntax("the expression is empty", 0)
    bad = _CHARACTERS.search(text)
    if bad is not None:
        char, column = bad.group(), bad.start()
        problem = _CHARACTER_PROBLEMS.get(char)
        if problem is None:
            shown = repr(char) if char.isprintable() else f"{char!r} (U+{ord(char):04X})"
            reason = "only ASCII letters, digits, operators, brackets, ',', '.', ':' and spaces"
            raise _syntax(f"unexpected character {shown} at column {column}; {reason}", column)
        raise _syntax(f"{problem} (column {column})", column, ErrorCode.EXPRESSION_NOT_ALLOWED)
    _scan_numbers(text)
    depth = deepest = 0
    for char in text:
        if char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth -= 1
    if deepest > limits.max_expression_depth:
        raise depth_exceeded(limits.max_expression_depth, deepest)


def _scan_numbers(text: str) -> None:
    # A number running into a name ("1if", "0x1f", "1.__class__") is an error or, for a
    # few keywords, only a warning from Python's tokenizer: refuse them all here.
    for match in _WORDS.finditer(text):
        end = match.end()
        if match.group()[0] in _NAME_START or end >= len(text):
            continue
        if text[end].isalnum() or text[end] in "_.":
            column = match.start()
            stop = end
            while (
                stop < len(text)
                and stop - column < 20
                and (text[stop].isalnum() or text[stop] in "_.")
            ):
                stop += 1
            shown = text[column:stop]
            reason = (
                "complex numbers are not supported"
                if text[end] in "jJ"
                else "numbers are decimal, like 2, 0.5 or 1e-3, and are not followed by a name"
            )
            raise _syntax(f"invalid number {shown!r} at column {column}: {reason}", column)


_PARSING = threading.Lock()
"""One ``ast.parse`` at a time: CPython 3.11's parser keeps its recursion depth in state the
threads share, and two long expressions parsed in threads at once failed with
``SystemError: AST constructor recursion depth mismatch`` (7 of 80 concurrent requests)."""


def _parse(text: str, offset: int, limits: Limits) -> ast.Expression:
    try:
        with _PARSING:
            return ast.parse(text, mode="eval")
    except SyntaxError as exc:
        lines = _line_starts(text, offset)
        line = min(max(exc.lineno or 1, 1), len(lines))
        if exc.offset is None or exc.offset < 1:  # the parser ran off the end
            column = offset + len(text)
            message = "unexpected end of the expression" if exc.msg == "invalid syntax" else exc.msg
        else:
            column = min(lines[line - 1] + exc.offset - 1, offset + len(text))
            message = exc.msg
        raise _syntax(f"syntax error at column {column}: {message}", column) from None
    except (RecursionError, MemoryError):
        # A long chain of unary operators: too deep for the parser's own recursion.
        deepest = limits.max_expression_depth
        raise depth_exceeded(deepest, deepest + 1, at_least=True) from None
    except ValueError as exc:
        raise _syntax(f"the expression cannot be parsed: {exc}", 0) from None
