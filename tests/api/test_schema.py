"""Schemathesis over the whole OpenAPI schema, in-process.

Covers every route the schema lists, including routes added later, with no change here:
no 5xx, and every response matches the status codes, content types and schemas declared.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from schemas.activations import ACTIVATION_NAMES, FUNCTION_NAME_PATTERN, PARAM_SCHEMAS
from schemas.autograd import CONSTANT_NAMES
from service.errors import InvalidInput
from service.main import create_app
from service.ops.autograd.functions import CONSTANTS
from service.ops.nn.registry import ACTIVATIONS, find_activation
from tests.conftest import make_settings

# Small limits: generated sizes are refused (413) in milliseconds instead of computed.
app = create_app(
    make_settings(
        max_elements=1 << 16,
        max_total_elements=1 << 18,
        max_flops=1e8,
        request_timeout_s=5.0,
        queue_timeout_s=2.0,
    )
)
# The coverage phase enumerates boundary variants of every field of every step model (about
# sixty ops): thousands of requests, which test_schema_live.py sends to a live server.
# Examples and fuzzing cover the schema here within minutes. A body over a limit is refused
# (413) before its values are read, invalid or not.
config = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "413", "415", "422"]
            }
        },
        # schemathesis checks its negative multipart bodies with jsonschema_rs, which
        # raises on the file parts it generates ("Unsupported type: 'Binary'"): the
        # multipart route gets positive cases here.
        "operations": [
            {"include-path": "/data/images", "generation": {"mode": "positive"}},
        ],
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


# --- the constants the schemas publish are the service's own ---------------------------------


def test_the_activation_names_are_the_registrys() -> None:
    assert tuple((a.name, a.nn_class) for a in ACTIVATIONS) == ACTIVATION_NAMES


def test_each_activation_parameter_is_published_with_its_kind() -> None:
    kinds = {"number": {"type": "number"}, "integer": "integer", "choice": "enum"}
    published = {p.name: p for a in ACTIVATIONS for p in a.params}
    assert set(PARAM_SCHEMAS) == set(published)
    for name, param in published.items():
        schema = PARAM_SCHEMAS[name]
        if param.kind == "number":
            assert schema == kinds["number"], name
        elif param.kind == "integer":
            assert schema["type"] == "integer", name
        elif param.kind == "choice":
            assert schema["enum"] == list(param.choices), name
        else:  # prelu's weight: a number or a list of them
            assert {"type": "number"} in schema["anyOf"], name


@settings(max_examples=300)
@given(
    st.sampled_from([alias for row in ACTIVATION_NAMES for alias in row]),
    st.lists(st.booleans(), max_size=20),
    st.lists(st.integers(0, 20), max_size=3),
)
def test_the_function_name_pattern_admits_exactly_the_names_found(
    name: str, upper: list[bool], underscores: list[int]
) -> None:
    spelled = "".join(c.upper() if i < len(upper) and upper[i] else c for i, c in enumerate(name))
    for position in underscores:
        spelled = spelled[: position + 1] + "_" + spelled[position + 1 :]
    assert re.fullmatch(FUNCTION_NAME_PATTERN, spelled)
    find_activation(spelled)  # the service finds it too


@given(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True))
def test_names_the_pattern_refuses_are_unknown(name: str) -> None:
    if re.fullmatch(FUNCTION_NAME_PATTERN, name):
        find_activation(name)
    else:
        with pytest.raises(InvalidInput):
            find_activation(name)


def test_the_constants_no_input_may_be_named_are_the_languages() -> None:
    assert set(CONSTANT_NAMES) == set(CONSTANTS)
