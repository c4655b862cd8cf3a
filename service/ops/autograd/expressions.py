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

Limits, checked before anything is evaluated: :data:`MAX_EXPRESSION_LENGTH` characters,
:data:`MAX_EXPRESSION_NODES` syntax nodes and :data:`MAX_EXPRESSION_DEPTH` levels of nesting
(a cheap scan bounds brackets before ``ast.parse`` sees the text). Over one, a 413 names it.

An expression is evaluated twice: on torch's ``meta`` device (shapes and dtypes only), where
every intermediate is charged to a :class:`Budget`, and then for real.
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, TypeGuard, cast

import torch
from torch.nn import functional

from service.errors import ErrorCode, InvalidInput, LimitExceeded, OpError, ServiceError
from service.limits import Budget, Deadline, estimate_matmul_flops
from service.ops.tensors.indexing import IndexItem, check_index

MAX_EXPRESSION_LENGTH = 4096
"""Longest expression text, in characters."""
MAX_EXPRESSION_NODES = 1000
"""Most syntax nodes (names, numbers, operators, calls, …) in one expression."""
MAX_EXPRESSION_DEPTH = 100
"""Deepest nesting of syntax nodes, and of brackets: ``x+x+…+x`` nests one level per ``+``."""

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "inf": math.inf}
"""Names with a fixed value."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_TUPLE = 8
META = torch.device("meta")

Value = torch.Tensor | int | float | bool | None | tuple[int, ...]
"""What an expression node evaluates to."""
Number = int | float | bool


# --- functions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """A function callable from an expression: torch's, with its parameter names."""

    fn: Callable[..., torch.Tensor]
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    tensors: tuple[str, ...] = ("input",)
    """Parameters that must be tensors: a plain number there becomes a 0-d tensor."""
    matmul: bool = False
    """FLOPs are those of ``matmul(input, other)`` rather than one per element."""

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if p not in self.defaults)

    def signature(self, name: str) -> str:
        parts = [p if p not in self.defaults else f"{p}={self.defaults[p]!r}" for p in self.params]
        return f"{name}({', '.join(parts)})"


def _all_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(tensor.dim()))


def _reduction(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def run(input: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
        if dim is None:
            if keepdim and input.dim():
                return fn(input, dim=_all_dims(input), keepdim=True)
            return fn(input)
        return fn(input, dim=dim, keepdim=keepdim)

    return run


def _prod(input: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
    if dim is None:
        out = torch.prod(input)
        return out.reshape([1] * input.dim()) if keepdim else out
    return torch.prod(input, dim, keepdim=keepdim)


def _spread(
    fn: Callable[..., torch.Tensor],
) -> Callable[..., torch.Tensor]:
    def run(
        input: torch.Tensor,
        dim: Any = None,
        correction: float = 1,
        keepdim: bool = False,
    ) -> torch.Tensor:
        return fn(input, dim=dim, correction=correction, keepdim=keepdim)

    return run


def _extremum(
    reduce: Callable[..., Any],
    elementwise: Callable[..., torch.Tensor],
    bound: str,
) -> Callable[..., torch.Tensor]:
    # Python's reading of max(a, b) (the larger of two), torch's of max(x, dim=d).
    def run(
        input: torch.Tensor,
        other: Value = None,
        dim: Any = None,
        keepdim: bool = False,
    ) -> torch.Tensor:
        if other is not None:
            if dim is not None:
                raise InvalidInput(
                    "give a second operand or dim=, not both", code=ErrorCode.INVALID_ARGUMENT
                )
            if isinstance(other, torch.Tensor):
                return elementwise(input, other)
            if bound == "min":
                return torch.clamp(input, min=other)  # type: ignore[arg-type]
            return torch.clamp(input, max=other)  # type: ignore[arg-type]
        if dim is None:
            out: torch.Tensor = reduce(input)
            return out.reshape([1] * input.dim()) if keepdim else out
        values: torch.Tensor = reduce(input, dim=dim, keepdim=keepdim).values
        return values

    return run


def _norm(
    input: torch.Tensor,
    p: float = 2,
    dim: Any = None,
    keepdim: bool = False,
) -> torch.Tensor:
    norm: torch.Tensor = torch.norm(input, p=p, dim=dim, keepdim=keepdim)
    return norm


def _where(condition: torch.Tensor, input: Value, other: Value) -> torch.Tensor:
    if condition.dtype != torch.bool:
        raise InvalidInput(
            "where: the condition must be a bool tensor, such as a comparison (x > 0)",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return torch.where(condition, input, other)  # type: ignore[arg-type]


def _pow(input: Value, exponent: Value) -> torch.Tensor:
    return torch.pow(input, exponent)  # type: ignore[arg-type]


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> FunctionSpec:
    return FunctionSpec(fn, ("input",))


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw: Any) -> FunctionSpec:
    return FunctionSpec(
        # Positional: torch names the second operand other, mat2, vec or tensor.
        lambda input, other: fn(input, other),  # noqa: PLW0108
        ("input", "other"),
        tensors=("input", "other"),
        **kw,
    )


_REDUCE = ("input", "dim", "keepdim")
_REDUCE_DEFAULTS = {"dim": None, "keepdim": False}

FUNCTIONS: dict[str, FunctionSpec] = {
    # reductions
    "sum": FunctionSpec(_reduction(torch.sum), _REDUCE, _REDUCE_DEFAULTS),
    "mean": FunctionSpec(_reduction(torch.mean), _REDUCE, _REDUCE_DEFAULTS),
    "prod": FunctionSpec(_prod, _REDUCE, _REDUCE_DEFAULTS),
    "max": FunctionSpec(
        _extremum(torch.max, torch.maximum, "min"),
        ("input", "other", "dim", "keepdim"),
        {"other": None, "dim": None, "keepdim": False},
    ),
    "min": FunctionSpec(
        _extremum(torch.min, torch.minimum, "max"),
        ("input", "other", "dim", "keepdim"),
        {"other": None, "dim": None, "keepdim": False},
    ),
    "norm": FunctionSpec(
        _norm, ("input", "p", "dim", "keepdim"), {"p": 2, "dim": None, "keepdim": False}
    ),
    "var": FunctionSpec(
        _spread(torch.var),
        ("input", "dim", "correction", "keepdim"),
        {"dim": None, "correction": 1, "keepdim": False},
    ),
    "std": FunctionSpec(
        _spread(torch.std),
        ("input", "dim", "correction", "keepdim"),
        {"dim": None, "correction": 1, "keepdim": False},
    ),
    "logsumexp": FunctionSpec(
        lambda input, dim, keepdim: torch.logsumexp(input, dim=dim, keepdim=keepdim),
        _REDUCE,
        {"keepdim": False},
    ),
    "softmax": FunctionSpec(
        lambda input, dim: torch.softmax(input, dim=dim),
        ("input", "dim"),
    ),
    "log_softmax": FunctionSpec(
        lambda input, dim: torch.log_softmax(input, dim=dim),
        ("input", "dim"),
    ),
    "cumsum": FunctionSpec(
        lambda input, dim: torch.cumsum(input, dim=dim),
        ("input", "dim"),
    ),
    "cumprod": FunctionSpec(
        lambda input, dim: torch.cumprod(input, dim=dim),
        ("input", "dim"),
    ),
    # elementwise, one operand
    "exp": _unary(torch.exp),
    "exp2": _unary(torch.exp2),
    "expm1": _unary(torch.expm1),
    "log": _unary(torch.log),
    "log2": _unary(torch.log2),
    "log10": _unary(torch.log10),
    "log1p": _unary(torch.log1p),
    "sqrt": _unary(torch.sqrt),
    "rsqrt": _unary(torch.rsqrt),
    "square": _unary(torch.square),
    "reciprocal": _unary(torch.reciprocal),
    "abs": _unary(torch.abs),
    "sign": _unary(torch.sign),
    "floor": _unary(torch.floor),
    "ceil": _unary(torch.ceil),
    "round": _unary(torch.round),
    "sin": _unary(torch.sin),
    "cos": _unary(torch.cos),
    "tan": _unary(torch.tan),
    "asin": _unary(torch.asin),
    "acos": _unary(torch.acos),
    "atan": _unary(torch.atan),
    "sinh": _unary(torch.sinh),
    "cosh": _unary(torch.cosh),
    "tanh": _unary(torch.tanh),
    "asinh": _unary(torch.asinh),
    "acosh": _unary(torch.acosh),
    "atanh": _unary(torch.atanh),
    "erf": _unary(torch.erf),
    "erfc": _unary(torch.erfc),
    # activations
    "sigmoid": _unary(torch.sigmoid),
    "logsigmoid": _unary(functional.logsigmoid),
    "relu": _unary(torch.relu),
    "gelu": _unary(functional.gelu),
    "silu": _unary(functional.silu),
    "mish": _unary(functional.mish),
    "selu": _unary(functional.selu),
    "softsign": _unary(functional.softsign),
    "softplus": FunctionSpec(
        lambda input, beta, threshold: functional.softplus(input, beta=beta, threshold=threshold),
        ("input", "beta", "threshold"),
        {"beta": 1.0, "threshold": 20.0},
    ),
    "leaky_relu": FunctionSpec(
        functional.leaky_relu,
        ("input", "negative_slope"),
        {"negative_slope": 0.01},
    ),
    "elu": FunctionSpec(
        functional.elu,
        ("input", "alpha"),
        {"alpha": 1.0},
    ),
    # elementwise, several operands
    "pow": FunctionSpec(_pow, ("input", "exponent"), tensors=()),
    "clamp": FunctionSpec(
        lambda input, min, max: torch.clamp(input, min=min, max=max),
        ("input", "min", "max"),
        {"min": None, "max": None},
    ),
    "where": FunctionSpec(_where, ("condition", "input", "other"), tensors=("condition",)),
    "maximum": _binary(torch.maximum),
    "minimum": _binary(torch.minimum),
    "atan2": _binary(torch.atan2),
    # linear algebra and shapes
    "matmul": _binary(torch.matmul, matmul=True),
    "mm": _binary(torch.mm, matmul=True),
    "mv": _binary(torch.mv, matmul=True),
    "dot": _binary(torch.dot, matmul=True),
    "outer": _binary(torch.outer),
    "trace": _unary(torch.trace),
    "t": _unary(torch.t),
    "transpose": FunctionSpec(
        torch.transpose,
        ("input", "dim0", "dim1"),
    ),
    "reshape": FunctionSpec(
        torch.reshape,
        ("input", "shape"),
    ),
}
"""Every function an expression may call, by name."""


def function_signatures() -> list[str]:
    """Each function with its parameters and defaults, e.g. ``sum(input, dim=None, …)``."""
    return [spec.signature(name) for name, spec in FUNCTIONS.items()]


# --- errors ----------------------------------------------------------------------------------


def _syntax(
    message: str, column: int, code: ErrorCode = ErrorCode.EXPRESSION_SYNTAX
) -> InvalidInput:
    return InvalidInput(message, details={"column": column}, code=code)


def _limit(limit: str, allowed: int, requested: int | str, message: str) -> LimitExceeded:
    # LimitExceeded words its message for units it knows; these are worded here.
    exc = LimitExceeded(limit, allowed, requested if isinstance(requested, int) else allowed, "")
    exc.message = message
    exc.details["requested"] = requested
    return exc


_NOT_ALLOWED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (x.y) is not allowed; call a function instead, e.g. sum(x)",
    ast.Lambda: "lambda is not allowed",
    ast.IfExp: "conditional expressions (a if c else b) are not allowed; use where(c, a, b)",
    ast.BoolOp: "and/or are not allowed; use where(...) or comparisons",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "*arguments are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.FloorDiv: "// is not supported; use floor(a / b)",
    ast.Not: "not is not allowed; use a comparison",
    ast.Invert: "~ is not supported",
}
_BITWISE = (ast.BitAnd, ast.BitOr, ast.BitXor, ast.LShift, ast.RShift)
_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    *(ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.Name),
    *(ast.Constant, ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Load),
    *(ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.MatMult, ast.Mod, ast.USub, ast.UAdd),
    *(ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq),
)
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


# --- parsing ---------------------------------------------------------------------------------


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


def _scan(text: str) -> None:
    """Cheap checks before ``ast.parse``: length, characters, bracket nesting."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise _limit(
            "max_expression_length",
            MAX_EXPRESSION_LENGTH,
            len(text),
            f"the expression is {len(text):,} characters long but the limit "
            f"max_expression_length is {MAX_EXPRESSION_LENGTH:,}",
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
    if deepest > MAX_EXPRESSION_DEPTH:
        raise _depth_limit(deepest)


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


def _depth_limit(depth: int | str) -> LimitExceeded:
    return _limit(
        "max_expression_depth",
        MAX_EXPRESSION_DEPTH,
        depth,
        f"the expression nests {depth} levels deep but the limit max_expression_depth is "
        f"{MAX_EXPRESSION_DEPTH}",
    )


def _parse(text: str, offset: int) -> ast.Expression:
    try:
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
        raise _depth_limit(f"more than {MAX_EXPRESSION_DEPTH}") from None
    except ValueError as exc:
        raise _syntax(f"the expression cannot be parsed: {exc}", 0) from None


def parse_expression(text: str, names: Iterable[str]) -> Expression:
    """Parse and check an expression over the input ``names``.

    Raises :class:`InvalidInput` (422, ``details.column`` says where) for a syntax error,
    a construct outside the language, an unknown name or function, or bad arguments; and
    :class:`LimitExceeded` (413) over the length, node or depth limit.
    """
    _scan(text)
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    tree = _parse(stripped, offset)
    expression = Expression(
        text=text,
        tree=tree,
        names=frozenset(),
        nodes=0,
        _line_starts=_line_starts(stripped, offset),
    )
    nodes = _check_nodes(expression)
    checker = _Checker(expression, frozenset(names))
    checker.check(tree.body)
    return dataclasses.replace(expression, names=frozenset(checker.used), nodes=nodes)


def _check_nodes(expression: Expression) -> int:
    """Allowed node types, node count and depth, without recursion (the tree may be deep)."""
    count = 0
    stack: list[tuple[ast.AST, int, ast.AST]] = [(expression.tree, 0, expression.tree)]
    while stack:
        node, depth, parent = stack.pop()
        if not isinstance(node, _ALLOWED_NODES):
            raise _not_allowed(expression, node, parent)
        if isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop)):
            continue
        count += 1
        if count > MAX_EXPRESSION_NODES:
            raise _limit(
                "max_expression_nodes",
                MAX_EXPRESSION_NODES,
                f"more than {MAX_EXPRESSION_NODES}",
                f"the expression has more than {MAX_EXPRESSION_NODES:,} syntax nodes, the "
                "limit max_expression_nodes",
            )
        if depth > MAX_EXPRESSION_DEPTH:
            raise _depth_limit(f"more than {MAX_EXPRESSION_DEPTH}")
        children = reversed(list(ast.iter_child_nodes(node)))
        stack.extend((child, depth + 1, node) for child in children)
    return count


def _not_allowed(
    expression: Expression, node: ast.AST, parent: ast.AST | None = None
) -> InvalidInput:
    # Operators carry no position: their expression's is the next best.
    where = node if hasattr(node, "lineno") else parent
    column = expression.column(where) if where is not None and hasattr(where, "lineno") else 0
    if isinstance(node, _BITWISE):
        reason = "bitwise operators are not supported"
    else:
        reason = _NOT_ALLOWED.get(type(node), f"{type(node).__name__} is not allowed")
    return InvalidInput(
        f"{reason} (column {column}); an expression is made of numbers, input names, pi, e, "
        "+ - * / ** @ %, comparisons, indexing and calls of the listed functions",
        details={"column": column, "construct": type(node).__name__},
        code=ErrorCode.EXPRESSION_NOT_ALLOWED,
    )


class _Checker:
    """What the grammar says about where each form may appear; names and calls resolved."""

    def __init__(self, expression: Expression, names: frozenset[str]) -> None:
        self.expression = expression
        self.names = names
        self.used: set[str] = set()

    def _error(self, node: ast.AST, message: str, code: ErrorCode, **details: Any) -> InvalidInput:
        column = self.expression.column(node)
        return InvalidInput(
            f"{message} (column {column})", details={"column": column, **details}, code=code
        )

    def check(self, node: ast.expr, *, argument: bool = False) -> None:
        if isinstance(node, ast.Constant):
            self._constant(node, argument=argument)
        elif isinstance(node, ast.Name):
            self._name(node)
        elif isinstance(node, ast.BinOp):
            self.check(node.left)
            self.check(node.right)
        elif isinstance(node, ast.UnaryOp):
            self.check(node.operand)
        elif isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise self._error(
                    node,
                    "chained comparisons (a < b < c) are not allowed; compare two values",
                    ErrorCode.EXPRESSION_NOT_ALLOWED,
                )
            self.check(node.left)
            self.check(node.comparators[0])
        elif isinstance(node, ast.Call):
            self._call(node)
        elif isinstance(node, ast.Subscript):
            self.check(node.value)
            static_index(node.slice, self._index_error)
        elif isinstance(node, (ast.Tuple, ast.List)) and argument:
            static_ints(node, self._argument_error)
        elif isinstance(node, (ast.Tuple, ast.List)):
            raise self._error(
                node,
                "tuples and lists are allowed only as function arguments, e.g. sum(x, dim=(0, 1))",
                ErrorCode.EXPRESSION_NOT_ALLOWED,
            )
        else:  # Slice outside a subscript: the grammar does not produce it elsewhere
            raise _not_allowed(self.expression, node)

    def _index_error(self, node: ast.AST, message: str) -> InvalidInput:
        return self._error(node, message, ErrorCode.INVALID_INDEX)

    def _argument_error(self, node: ast.AST, message: str) -> InvalidInput:
        return self._error(node, message, ErrorCode.INVALID_ARGUMENT)

    def _constant(self, node: ast.Constant, *, argument: bool) -> None:
        value = node.value
        if isinstance(value, bool) or (value is None and argument):
            return
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise self._error(
                    node, "integer literal out of the int64 range", ErrorCode.NUMBER_OUT_OF_RANGE
                )
            return
        if isinstance(value, float):
            return
        kind = {
            complex: "complex numbers are not supported",
            str: "strings are not allowed",
            bytes: "strings are not allowed",
            type(None): "None is allowed only as a function argument or an index",
            EllipsisType: "... is allowed only in an index",
        }.get(type(value), f"the constant {value!r} is not allowed")
        raise self._error(node, kind, ErrorCode.EXPRESSION_NOT_ALLOWED)

    def _name(self, node: ast.Name) -> None:
        if node.id in self.names:
            self.used.add(node.id)
            return
        if node.id in CONSTANTS:
            return
        known = sorted(self.names) + list(CONSTANTS)
        hint = (
            f"; {node.id} is a function: call it, e.g. {node.id}(x)" if node.id in FUNCTIONS else ""
        )
        raise self._error(
            node,
            f"unknown name {node.id!r}; the names are the inputs and the constants: "
            f"{', '.join(known)}{hint}",
            ErrorCode.UNKNOWN_NAME,
            name=node.id,
            known=known,
        )

    def _call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name):
            raise self._error(
                node,
                "only the listed functions can be called, by name",
                ErrorCode.EXPRESSION_NOT_ALLOWED,
            )
        name = node.func.id
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise self._error(
                node,
                f"unknown function {name!r}; the functions are: {', '.join(FUNCTIONS)}",
                ErrorCode.UNKNOWN_FUNCTION,
                name=name,
                allowed=list(FUNCTIONS),
            )
        signature = spec.signature(name)
        if len(node.args) > len(spec.params):
            raise self._error(
                node,
                f"{name} takes at most {len(spec.params)} arguments, got {len(node.args)}: "
                f"{signature}",
                ErrorCode.INVALID_ARGUMENT,
                function=name,
                signature=signature,
            )
        given = list(spec.params[: len(node.args)])
        for kw in node.keywords:
            if kw.arg is None:
                raise self._error(
                    kw, "**arguments are not allowed", ErrorCode.EXPRESSION_NOT_ALLOWED
                )
            if kw.arg not in spec.params:
                raise self._error(
                    kw,
                    f"{name} has no parameter {kw.arg!r}: {signature}",
                    ErrorCode.INVALID_ARGUMENT,
                    function=name,
                    signature=signature,
                )
            if kw.arg in given:
                raise self._error(
                    kw,
                    f"{name} got {kw.arg!r} twice: {signature}",
                    ErrorCode.INVALID_ARGUMENT,
                    function=name,
                    signature=signature,
                )
            given.append(kw.arg)
        missing = [p for p in spec.required if p not in given]
        if missing:
            raise self._error(
                node,
                f"{name} needs {', '.join(missing)}: {signature}",
                ErrorCode.INVALID_ARGUMENT,
                function=name,
                signature=signature,
            )
        for arg in node.args:
            self.check(arg, argument=True)
        for kw in node.keywords:
            self.check(kw.value, argument=True)


ErrorFactory = Callable[[ast.AST, str], ServiceError]


def _static_int(node: ast.AST, error: ErrorFactory) -> int:
    negative = False
    inner = node
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        negative = isinstance(node.op, ast.USub)
        inner = node.operand
    if (
        isinstance(inner, ast.Constant)
        and isinstance(inner.value, int)
        and not isinstance(inner.value, bool)
    ):
        value = -inner.value if negative else inner.value
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise error(node, "index out of the int64 range")
        return value
    raise error(node, "indices and dimensions must be integer literals such as 0, -1 or 2")


def static_ints(node: ast.Tuple | ast.List, error: ErrorFactory) -> tuple[int, ...]:
    """The integers of a tuple or list literal (dimensions, shapes)."""
    if len(node.elts) > _MAX_TUPLE:
        raise error(node, f"at most {_MAX_TUPLE} integers in a tuple")
    return tuple(_static_int(element, error) for element in node.elts)


def _static_part(node: ast.expr | None, error: ErrorFactory) -> int | None:
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return None
    return _static_int(node, error)


def static_index(node: ast.expr, error: ErrorFactory) -> tuple[IndexItem, ...]:
    """A subscript as an index tuple: integers, slices of integers, None and ``...``."""
    items = node.elts if isinstance(node, ast.Tuple) else [node]
    if len(items) > 2 * _MAX_TUPLE:
        raise error(node, f"at most {2 * _MAX_TUPLE} index items")
    index: list[IndexItem] = []
    for item in items:
        if isinstance(item, ast.Constant) and (item.value is None or item.value is Ellipsis):
            index.append(item.value)
        elif isinstance(item, ast.Slice):
            index.append(
                slice(
                    _static_part(item.lower, error),
                    _static_part(item.upper, error),
                    _static_part(item.step, error),
                )
            )
        else:
            index.append(_static_int(item, error))
    if sum(1 for item in index if item is Ellipsis) > 1:
        raise error(node, "an index can hold only one ...")
    for part in index:
        if isinstance(part, slice) and part.step is not None and part.step <= 0:
            raise error(node, "slice steps must be positive (torch has no negative steps)")
    return tuple(index)


# --- evaluation ------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.MatMult: operator.matmul,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float))  # bool is an int


@dataclass
class Evaluation:
    """Where an expression is evaluated and what it may spend."""

    device: torch.device
    budget: Budget | None = None
    deadline: Deadline | None = None
    flops: float = 0.0
    """FLOPs of the forward evaluation (estimated: one per element, matmul's 2·m·k·n)."""


def evaluate(
    expression: Expression, env: Mapping[str, torch.Tensor], evaluation: Evaluation
) -> Value:
    """Evaluate a parsed expression over named tensors (already on ``evaluation.device``).

    On the ``meta`` device nothing is computed: every intermediate's shape is charged to
    ``evaluation.budget``. Raises :class:`InvalidInput` / :class:`OpError` (422) naming the
    column of the part that failed, :class:`LimitExceeded` (413) over a limit.
    """
    return _Evaluator(expression, env, evaluation).evaluate(expression.tree.body)


class _Evaluator:
    def __init__(
        self, expression: Expression, env: Mapping[str, torch.Tensor], evaluation: Evaluation
    ) -> None:
        self.expression = expression
        self.env = env
        self.evaluation = evaluation

    def where(self, node: ast.AST) -> str:
        return f"{self.expression.source(node)!r} at column {self.expression.column(node)}"

    def evaluate(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Constant):
            # Only numbers, bools and (as arguments) None get here: the checker saw to it.
            return cast(Value, node.value)
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            return CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self.evaluate(node.left), self.evaluate(node.right)
            op = type(node.op)
            if _is_number(left) and _is_number(right):
                return self._numbers(node, op, left, right)
            return self.apply(node, _BINARY[op], [left, right], matmul=op is ast.MatMult)
        if isinstance(node, ast.UnaryOp):
            operand = self.evaluate(node.operand)
            if isinstance(node.op, ast.UAdd):
                return (
                    self.apply(node, operator.pos, [operand])
                    if not _is_number(operand)
                    else operand
                )
            if _is_number(operand):
                return self._int64(node, -operand)
            return self.apply(node, operator.neg, [operand])
        if isinstance(node, ast.Compare):
            left, right = self.evaluate(node.left), self.evaluate(node.comparators[0])
            compare = _COMPARE[type(node.ops[0])]
            if _is_number(left) and _is_number(right):
                return bool(compare(left, right))
            return self.apply(node, compare, [left, right])
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, (ast.Tuple, ast.List)):
            return static_ints(node, self._index_error)
        raise _not_allowed(self.expression, node)  # pragma: no cover - checked when parsed

    def _index_error(self, node: ast.AST, message: str) -> InvalidInput:
        return InvalidInput(
            f"{self.where(node)}: {message}",
            details={"column": self.expression.column(node)},
            code=ErrorCode.INVALID_INDEX,
        )

    def _int64(self, node: ast.AST, value: Number) -> Number:
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            raise self._int64_error(node)
        return value

    def _numbers(self, node: ast.AST, op: type[ast.operator], left: Number, right: Number) -> Value:
        """Python's arithmetic on two plain numbers, bounded to int64 (nothing huge is built)."""
        if op is ast.MatMult:
            return self.apply(node, operator.matmul, [left, right])  # torch's error message
        exact = isinstance(left, int) and isinstance(right, int)
        # |left| ** right has right·log2|left| bits: anything past 64 cannot fit int64.
        if op is ast.Pow and exact and right > 0 and abs(left) > 1 and right > 64:
            raise self._int64_error(node)
        try:
            result = _BINARY[op](left, right)
        except ZeroDivisionError:
            raise InvalidInput(
                f"{self.where(node)}: division by zero",
                details={"column": self.expression.column(node)},
                code=ErrorCode.OP_FAILED,
            ) from None
        except OverflowError:
            raise InvalidInput(
                f"{self.where(node)}: the result is too large for a float",
                details={"column": self.expression.column(node)},
                code=ErrorCode.NUMBER_OUT_OF_RANGE,
            ) from None
        if isinstance(result, complex):  # (-8) ** 0.5: not a real number, as in torch
            return math.nan
        return self._int64(node, result)

    def _int64_error(self, node: ast.AST) -> InvalidInput:
        return InvalidInput(
            f"{self.where(node)}: the integer result is out of the int64 range; "
            "write a float (9.0**99) for large numbers",
            details={"column": self.expression.column(node)},
            code=ErrorCode.NUMBER_OUT_OF_RANGE,
        )

    def _subscript(self, node: ast.Subscript) -> Value:
        value = self.evaluate(node.value)
        if not isinstance(value, torch.Tensor):
            raise InvalidInput(
                f"{self.where(node)}: only tensors can be indexed, not a plain number",
                details={"column": self.expression.column(node)},
                code=ErrorCode.INVALID_INDEX,
            )
        index = static_index(node.slice, self._index_error)
        try:
            check_index(index, tuple(value.shape))
        except IndexError as exc:
            raise InvalidInput(
                f"{self.where(node)}: the index does not fit shape {list(value.shape)}: {exc}",
                details={"column": self.expression.column(node), "shape": list(value.shape)},
                code=ErrorCode.INVALID_INDEX,
            ) from None
        return self.apply(node, operator.getitem, [value, index])

    def _call(self, node: ast.Call) -> Value:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        spec = FUNCTIONS[name]
        args: dict[str, Value] = dict(spec.defaults)
        for param, arg in zip(spec.params, node.args, strict=False):
            args[param] = self.evaluate(arg)
        for kw in node.keywords:
            assert kw.arg is not None
            args[kw.arg] = self.evaluate(kw.value)
        if name == "pow" and _is_number(args["input"]) and _is_number(args["exponent"]):
            return self._numbers(node, ast.Pow, args["input"], args["exponent"])
        for param in spec.tensors:
            value = args[param]
            if isinstance(value, (int, float)):
                args[param] = torch.as_tensor(value, device=self.evaluation.device)
            elif not isinstance(value, torch.Tensor):
                raise InvalidInput(
                    f"{self.where(node)}: {name}'s {param} must be a tensor or a number",
                    details={"column": self.expression.column(node), "function": name},
                    code=ErrorCode.INVALID_ARGUMENT,
                )
        return self.apply(node, spec.fn, [], args, matmul=spec.matmul)

    def apply(
        self,
        node: ast.AST,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None = None,
        *,
        matmul: bool = False,
    ) -> Value:
        """Call a torch function for a node, then charge its output and check the time."""
        kwargs = kwargs or {}
        try:
            out = fn(*args, **kwargs)
        except ServiceError as exc:
            exc.message = f"{self.where(node)}: {exc.message}"
            exc.details.setdefault("column", self.expression.column(node))
            raise
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
            # ArithmeticError: torch's OverflowError for a number beyond the tensor's range.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OpError(
                f"{self.where(node)}: {first}",
                details={"column": self.expression.column(node)},
            ) from exc
        if isinstance(out, torch.Tensor):
            operands = [v for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)]
            self._charge(node, out, operands, matmul=matmul)
        if self.evaluation.deadline is not None:
            self.evaluation.deadline.check()
        return out  # type: ignore[no-any-return]

    def _charge(
        self, node: ast.AST, out: torch.Tensor, operands: Sequence[torch.Tensor], *, matmul: bool
    ) -> None:
        if matmul and len(operands) == 2 and min(t.dim() for t in operands) >= 1:
            flops = float(estimate_matmul_flops(tuple(operands[0].shape), tuple(operands[1].shape)))
        else:
            flops = float(max(sum(t.numel() for t in operands), out.numel()))
        self.evaluation.flops += flops
        budget = self.evaluation.budget
        if budget is None:
            return
        what = self.where(node)
        try:
            budget.charge_tensor(out.numel(), what)
            budget.charge_flops(flops, what)
        except ServiceError as exc:
            exc.details.setdefault("column", self.expression.column(node))
            raise


def check_input_names(names: Iterable[str]) -> None:
    """Input names must be usable in an expression: identifiers, not keywords or constants."""
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name) or name in CONSTANTS:
            raise InvalidInput(
                f"input name {name!r} cannot be used in an expression: names are identifiers "
                f"(letters, digits, _), not Python keywords or the constants "
                f"{', '.join(CONSTANTS)}",
                details={"name": name},
                code=ErrorCode.INVALID_NAME,
            )
