"""Schemathesis over the whole OpenAPI schema, in-process.

Covers every route the schema lists, including routes added later, with no change here:
no 5xx, and every response matches the status codes, content types and schemas declared.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
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
# sixty ops): thousands of requests. Examples and fuzzing cover the schema within minutes.
config = schemathesis.config.SchemathesisConfig.from_dict(
    {"phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}}}
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
