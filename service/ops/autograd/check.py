"""The checker of ``POST /grad`` expressions: what the grammar allows where, resolved.

A parsed tree is walked twice before anything is evaluated. :func:`check_nodes` walks it
without recursion (the tree may be deep): only the node types of the language, at most
``max_expression_nodes`` nodes and ``max_expression_depth`` levels. The checker then
resolves every name (an input or a constant) and every call (a function of
:data:`~.functions.FUNCTIONS`, its arguments against the function's parameters), and reads
subscripts and integer tuples as constants (:func:`static_index`, :func:`static_ints`), so
that evaluation meets no surprise it could have seen coming.
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
from collections.abc import Callable, Iterable
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded, ServiceError
from service.ops.autograd.functions import CONSTANTS, FUNCTIONS
from service.ops.tensors.indexing import IndexItem

if TYPE_CHECKING:
    from service.ops.autograd.parse import Expression

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of an integer in an expression: literals, indices and plain arithmetic."""
_MAX_TUPLE = 8

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


def depth_exceeded(allowed: int, depth: int, *, at_least: bool = False) -> LimitExceeded:
    """The 413 for an expression nested ``depth`` levels deep (``at_least``: or deeper)."""
    levels = f"more than {allowed}" if at_least else str(depth)
    return LimitExceeded(
        "max_expression_depth",
        allowed,
        depth,
        "the expression",
        message=f"the expression nests {levels} levels deep but the limit "
        f"max_expression_depth is {allowed}",
    )


def check_expression(expression: Expression, names: Iterable[str], *, limits: Limits) -> Expression:
    """Check a parsed expression over the input ``names``: the expression again, with the
    names it reads and its node count.

    Raises :class:`InvalidInput` (422, ``details.column`` says where) for a construct
    outside the language, an unknown name or function, or bad arguments; and
    :class:`LimitExceeded` (413) over the node or depth limit.
    """
    nodes = check_nodes(expression, limits=limits)
    checker = _Checker(expression, frozenset(names))
    checker.check(expression.tree.body)
    return dataclasses.replace(expression, names=frozenset(checker.used), nodes=nodes)


def check_nodes(expression: Expression, *, limits: Limits) -> int:
    """Allowed node types, node count and depth, without recursion (the tree may be deep)."""
    most, deepest = limits.max_expression_nodes, limits.max_expression_depth
    count = 0
    stack: list[tuple[ast.AST, int, ast.AST]] = [(expression.tree, 0, expression.tree)]
    while stack:
        node, depth, parent = stack.pop()
        if not isinstance(node, _ALLOWED_NODES):
            raise not_allowed(expression, node, parent)
        if isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop)):
            continue
        count += 1
        if count > most:
            # The walk stops at the first node over the limit: the count is a lower bound.
            raise LimitExceeded(
                "max_expression_nodes",
                most,
                most + 1,
                "the expression",
                message=f"the expression has more than {most:,} syntax nodes, the limit "
                "max_expression_nodes",
            )
        if depth > deepest:
            raise depth_exceeded(deepest, deepest + 1, at_least=True)
        children = reversed(list(ast.iter_child_nodes(node)))
        stack.extend((child, depth + 1, node) for child in children)
    return count


def not_allowed(
    expression: Expression, node: ast.AST, parent: ast.AST | None = None
) -> InvalidInput:
    """The 422 for a construct outside the language, at its column."""
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
            raise not_allowed(self.expression, node)

    def _index_error(self, node: ast.AST, message: str) -> InvalidInput:
        return self._error(node, message, ErrorCode.INVALID_INDEX)

    def _argument_error(self, node: ast.AST, message: str) -> InvalidInput:
        return self._error(node, message, ErrorCode.INVALID_ARGUMENT)

    def _constant(self, node: ast.Constant, *, argument: bool) -> None:
        value = node.value
        if isinstance(value, bool) or (value is None and argument):
            return
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
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
"""Builds the error for a node, in the wording and code of whoever reads it."""


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
        if not INT64_MIN <= value <= INT64_MAX:
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
