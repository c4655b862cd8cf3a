"""How the clients' methods are called: unknown keywords refused with a suggestion, and the
inputs of an expression checked against the names it uses. Nothing here does I/O."""

from __future__ import annotations

import ast
import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from torchlab_client._names import did_you_mean

P = ParamSpec("P")
R = TypeVar("R")


class TorchlabWarning(UserWarning):
    """A call that works but probably does not do what was meant (an expression input the
    expression never uses)."""


def checked(method: Callable[P, R]) -> Callable[P, R]:
    """``method``, refusing a keyword it does not take with a ``TypeError`` that suggests
    the parameter meant (``hesian`` -> ``hessian``). Methods with ``**kwargs`` check their
    own keywords."""
    signature = inspect.signature(method)
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return method
    names = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    known = frozenset(names)
    qualname = method.__qualname__

    def check(kwargs: Mapping[str, Any]) -> None:
        for key in kwargs:
            if key not in known:
                raise unexpected_keyword(qualname, key, names)

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return await cast(Callable[..., Any], method)(*args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        check(kwargs)
        return method(*args, **kwargs)

    return wrapper


def unexpected_keyword(qualname: str, key: str, names: list[str]) -> TypeError:
    """Python's error for an unknown keyword, with the parameter probably meant."""
    return TypeError(
        f"{qualname}() got an unexpected keyword argument {key!r}{did_you_mean(key, names)}; "
        f"it takes {', '.join(names)}"
    )


def expression_names(expression: str) -> set[str] | None:
    """The names an expression reads (not the functions it calls); None when it is not
    Python syntax (the service then says what is wrong)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called
    }


def grad_inputs(
    method: Callable[..., Any],
    expression: str,
    inputs: Mapping[str, Any] | None,
    named_inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """The inputs of ``grad``: ``inputs``, and (deprecated) inputs given as keywords.

    A keyword the expression reads is an input, with a ``DeprecationWarning``; any other
    keyword is a ``TypeError`` suggesting the parameter meant (``hesian=True``). An input
    the expression never reads is a :class:`TorchlabWarning`.
    """
    used = expression_names(expression)
    if named_inputs:
        parameters = [
            p.name
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        ]
        for key in named_inputs:
            if used is not None and key not in used:
                raise unexpected_keyword(method.__qualname__, key, parameters)
        warnings.warn(
            f"grad(): give the expression's inputs as inputs={{...}}, not as keywords "
            f"({', '.join(named_inputs)}); keyword inputs will be removed",
            DeprecationWarning,
            stacklevel=3,  # this, grad, the caller
        )
    merged = {**(inputs or {}), **named_inputs}
    if used is not None:
        for name in merged:
            if name not in used:
                warnings.warn(
                    f"grad(): the input {name!r} is not used by the expression "
                    f"{expression!r}{did_you_mean(name, used)}",
                    TorchlabWarning,
                    stacklevel=3,
                )
    return merged
