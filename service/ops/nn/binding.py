"""Binding a request's activation functions to their parameters' values: each name looked
up in the registry, each given value checked against its parameter, the defaults filled in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.errors import ErrorCode, InvalidInput
from service.ops.nn.registry import Activation, ParamValue, find_activation


@dataclass(frozen=True)
class BoundActivation:
    """A function with every parameter's value: the given ones, checked, and the defaults."""

    activation: Activation
    params: dict[str, ParamValue] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.activation.name

    @property
    def title(self) -> str:
        """The nn class name (the tutorial's panel titles), with the values that differ
        from the defaults: ``LeakyReLU(negative_slope=0.2)``."""
        changed = [
            f"{p.name}={_short(self.params[p.name])}"
            for p in self.activation.params
            if p.required or self.params[p.name] != p.default
        ]
        name = self.activation.nn_class
        return f"{name}({', '.join(changed)})" if changed else name


def _short(value: ParamValue) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value[:4]) + (", …]" if len(value) > 4 else "]")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def bind(
    requests: Sequence[tuple[str, Mapping[str, object]]],
    shared: Mapping[str, object],
) -> list[BoundActivation]:
    """Resolve each ``(name, own params)`` and give it its parameters' values.

    ``shared`` values go to every listed function that has a parameter of that name; one
    that none of them has is a 422 ``unknown_param``. A function's own params are checked
    against it alone and win over shared ones. A required parameter left out is a 422
    ``missing_param``; a value of the wrong kind a 422 ``invalid_param``.
    """
    resolved = [(find_activation(name), own, index) for index, (name, own) in enumerate(requests)]
    accepted = {p.name for activation, _, _ in resolved for p in activation.params}
    for name in shared:
        if name not in accepted:
            raise _unknown_param(name, sorted(accepted), "params", [a.name for a, _, _ in resolved])
    bound = []
    for activation, own, index in resolved:
        where = f"functions[{index}]" if len(requests) > 1 else activation.name
        allowed = [p.name for p in activation.params]
        for name in own:
            if name not in allowed:
                raise _unknown_param(name, allowed, f"{where}.params", [activation.name])
        values: dict[str, ParamValue] = {}
        for param in activation.params:
            if param.name in own:
                values[param.name] = param.validate(own[param.name], f"{where}.params")
            elif param.name in shared:
                values[param.name] = param.validate(shared[param.name], "params")
            elif param.default is not None:
                values[param.name] = param.default
            else:
                raise InvalidInput(
                    f"{activation.name} needs the parameter {param.name!r} (torch has no "
                    f"default for it); give it in params",
                    details={"function": activation.name, "param": param.name},
                    code=ErrorCode.MISSING_PARAM,
                )
        bound.append(BoundActivation(activation, values))
    return bound


def _unknown_param(name: str, allowed: list[str], where: str, functions: list[str]) -> InvalidInput:
    takes = ", ".join(allowed) if allowed else "no parameters"
    return InvalidInput(
        f"{where}: unknown parameter {name[:64]!r} for {', '.join(functions)}; it takes {takes}",
        details={"param": name[:64], "allowed": allowed, "functions": functions},
        code=ErrorCode.UNKNOWN_PARAM,
    )
