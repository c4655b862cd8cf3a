"""Schemathesis against a live server: every phase, every check.

``uvicorn service.main:app`` on a free loopback port, with small limits and fixed device
rates (``TORCHLAB_CALIBRATION``), so that what is refused does not depend on the machine.
Every operation of the published document goes through the examples, coverage and fuzzing
phases (the in-process ``test_schema.py`` leaves coverage out), and every response through
every check. The coverage phase has no count of its own: it makes every boundary of every
field, 44,000 requests for ``/tensor/ops`` alone. :func:`test_live_coverage_phase` sends
an evenly spread sample of each operation's, at most :data:`COVERAGE_CASES`, so that the
whole run takes minutes on two cores. The checks, among them:

- ``positive_data_acceptance``: a request valid by the document is accepted. It may still
  name something that does not exist (404: a model of ``/v2/models/{name}``), be over a limit
  (413: the limits are settings, listed by ``GET /info``), find every compute slot busy (429)
  or run past its time (504). Otherwise it is refused only by a rule between
  fields that JSON Schema cannot state, each listed in :data:`CROSS_FIELD_RULES` with why.
- ``negative_data_rejection``: a request invalid by the document is refused (a 413 too: a
  body over a limit is refused before its values are read).

The stateful phase has nothing to chain: no operation creates anything a later one reads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.overrides import Override
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

from service.config import Settings
from service.main import create_app
from tests.reliability.conftest import Server, start_server, stop_server

LIVE_ENV = {
    "TORCHLAB_DEVICE": "cpu",
    "TORCHLAB_LOG_LEVEL": "warning",
    "TORCHLAB_MAX_ELEMENTS": str(1 << 16),
    "TORCHLAB_MAX_TOTAL_ELEMENTS": str(1 << 18),
    "TORCHLAB_MAX_FLOPS": "1e8",
    "TORCHLAB_REQUEST_TIMEOUT_S": "5",
    "TORCHLAB_QUEUE_TIMEOUT_S": "2",
    "TORCHLAB_CALIBRATION": json.dumps(
        {"cpu/float32": 1e11, "cpu/float64": 5e10, "cpu/float16": 1e9, "cpu/elements": 1e9}
    ),
}
"""Small limits, so that generated sizes are refused (413) in milliseconds, and fixed rates."""

FUZZED_EXAMPLES = 25
"""Examples per operation in the fuzzing phase."""

COVERAGE_CASES = 150
"""Most cases per operation of the coverage phase: an evenly spread sample of the cases it
makes (valid and invalid values at every boundary of every field), the same every run."""


@dataclass(frozen=True)
class CrossFieldRule:
    """A refusal of a request the document admits: a rule between fields (or between a field
    and what the service holds) that JSON Schema cannot state. The field descriptions say it."""

    code: str
    """The error's ``code``."""
    reason: str
    """Why the document cannot say it."""
    message: str = ""
    """A pattern the error message matches (``re.search``); empty: any."""


CROSS_FIELD_RULES: tuple[CrossFieldRule, ...] = (
    # Tensors: values against their own shape and dtype.
    CrossFieldRule(
        "shape_mismatch",
        "the number of values (or of base64 bytes) must be the product of the declared shape's "
        "sizes, times the dtype's width: arithmetic between fields",
        r"holds \d+ elements but data has|needs \d+ bytes, the base64 text holds",
    ),
    CrossFieldRule(
        "invalid_tensor",
        "an inference input may leave out `data` only in a binary request, whose "
        "parameters.binary_data_size says its bytes follow the JSON: a rule between a header "
        "(Inference-Header-Content-Length) and the body",
        r"has no 'data'",
    ),
    CrossFieldRule(
        "ragged_tensor",
        "every row of a nested list must be as long as its siblings: equal lengths between "
        "items, which JSON Schema cannot compare",
    ),
    CrossFieldRule(
        "invalid_data",
        "the values must fit the declared dtype (no NaN in an integer tensor, 300 is not a "
        "uint8; a bool tensor's bytes are 0 or 1): a bound that depends on another field",
        r"cannot be stored in|do not fit|bool bytes must be 0 or 1",
    ),
    CrossFieldRule(
        "invalid_shape",
        "a shape with a 0 may not make the product of its other sizes past 2**48 (no tensor "
        "could describe it): a product over items",
        r"too large to describe",
    ),
    # Names that must refer to something the request (or the service) defines.
    CrossFieldRule(
        "unknown_name",
        "a step's tensor names an input or an earlier step's result, `return` and `wrt` name "
        "inputs or results, an expression names its inputs: references between fields",
    ),
    CrossFieldRule(
        "missing_input",
        "an inference request gives every input the model named in the path takes (listed "
        "by GET /v2/models/{name}): a rule between the path and the body",
        r"^model \S+ needs the input",
    ),
    CrossFieldRule(
        "duplicate_field",
        "an inference request names each input once: names unique among a list's objects, "
        "where JSON Schema's uniqueItems compares whole items",
        r"^inputs\[\d+\]: input .* is given twice",
    ),
    CrossFieldRule(
        "unknown_feature",
        "features name columns of the chosen data (a dataset's, a CSV header's, x0, x1, ...)",
    ),
    CrossFieldRule("unknown_target", "target names a column of the chosen data"),
    CrossFieldRule(
        "unknown_column",
        "target and features name columns of the uploaded CSV: what a file holds",
    ),
    CrossFieldRule(
        "unexpected_target",
        "target names a dataset's or a CSV's column; which one the request has is decided "
        "by the other fields",
    ),
    CrossFieldRule(
        "not_classification",
        "a logistic fit needs a classification dataset: a property of the dataset named",
    ),
    CrossFieldRule(
        "unknown_param",
        "which parameters apply depends on the function or transform named beside them "
        "(names matched ignoring case, or torchvision's signature of the transform)",
    ),
    CrossFieldRule(
        "missing_param",
        "parameters torch or torchvision have no default for depend on the function or "
        "transform named beside them",
    ),
    CrossFieldRule(
        "invalid_param",
        "a transform's parameter values are checked by torchvision for the named transform",
    ),
    CrossFieldRule(
        "transform_failed",
        "a transform torchvision refuses for the pictures it is given (Normalize of uint8)",
    ),
    # Shapes that must agree with each other or with the other fields.
    CrossFieldRule(
        "shape_mismatch",
        "a tensor's shape must agree with the other fields (in_features, hidden_size, the "
        "model's features, the input's channels, x's samples against y's)",
    ),
    CrossFieldRule(
        "invalid_index",
        "an index must fit x's shape (no more integers and slices than dimensions, each "
        "integer within its dimension), and hold at most 64 items on both sides of `...` "
        "together: a count the pattern cannot bound across the ellipsis",
    ),
    CrossFieldRule(
        "too_many_dims",
        "a step's result may not have more than 8 dimensions: x's dimensions plus the new ones",
    ),
    CrossFieldRule(
        "invalid_model",
        "a model's coef, intercept, scaler and classes must have matching lengths: equal "
        "lengths between arrays",
    ),
    CrossFieldRule(
        "length_mismatch",
        "labels name one class per picture, y one target per sample: equal lengths",
    ),
    CrossFieldRule(
        "op_failed",
        "torch refuses what does not fit the tensors computed so far (a dimension x does "
        "not have, a reshape to another number of elements, mean of integers, a kernel larger "
        "than the padded input)",
    ),
    CrossFieldRule(
        "invalid_input",
        "an op that needs a float tensor, or one repeat per dimension of x: the tensor's "
        "dtype and shape are known when the program runs",
    ),
    CrossFieldRule(
        "integer_gradient",
        "wrt may name only floating-point inputs: the dtype of another field's tensor",
    ),
    CrossFieldRule(
        "not_scalar",
        "an expression's value must be one element: the shapes of its inputs decide",
    ),
    CrossFieldRule(
        "invalid_groups",
        "groups must divide the input's channels and the kernels' count",
    ),
    CrossFieldRule(
        "invalid_kernel_size",
        "kernel_size must suit the preset kernels named in kernels (odd, at least 3)",
    ),
    CrossFieldRule(
        "kernel_size_mismatch",
        "explicit kernels must all have one size, and match kernel_size when it is given",
    ),
    CrossFieldRule(
        "channel_mismatch",
        "explicit kernels must have as many channels as the input (divided by groups)",
    ),
    # The language of /grad: not a regular language.
    CrossFieldRule(
        "expression_syntax",
        "an expression's grammar nests parentheses and calls: not a regular language, so no "
        "pattern can state it",
    ),
    CrossFieldRule(
        "expression_not_allowed",
        "an expression's grammar nests: only the parser can tell an allowed construct",
    ),
    CrossFieldRule(
        "unknown_function",
        "a function called in an expression must be one of the listed ones: found only by "
        "parsing the expression",
    ),
    CrossFieldRule(
        "unexpected_argument",
        "a function's arguments in an expression are found only by parsing it",
    ),
    CrossFieldRule(
        "number_out_of_range",
        "an expression's integers are 64-bit: found only by parsing it",
    ),
    # Uploaded or base64 files: what they hold.
    CrossFieldRule(
        "unsupported_image",
        "a file's bytes must be a picture: what a file holds is not JSON",
    ),
    CrossFieldRule("invalid_image", "a file's bytes must be a whole picture"),
    CrossFieldRule("unsupported_archive", "a file's bytes must be a zip archive"),
    CrossFieldRule("corrupt_archive", "a zip's entries must decompress"),
    CrossFieldRule("empty_archive", "a zip must hold pictures in class folders"),
    CrossFieldRule("unsafe_archive_entry", "a zip's entry names must stay inside it"),
    CrossFieldRule("empty_csv", "a CSV file must hold rows"),
    CrossFieldRule("csv_not_text", "a CSV file's bytes must be UTF-8 text"),
    CrossFieldRule("csv_not_numeric", "a CSV's feature columns must hold numbers"),
    CrossFieldRule("csv_malformed", "a CSV file must parse"),
    CrossFieldRule("csv_bad_header", "a CSV's header must name its columns once each"),
    CrossFieldRule("csv_no_header", "a CSV must start with a header row"),
    CrossFieldRule("csv_no_features", "a CSV must have a column besides its target"),
    CrossFieldRule("csv_ragged", "a CSV's rows must have as many cells as its header"),
    CrossFieldRule(
        "targets_not_numeric", "a CSV's target column must hold numbers for a regression"
    ),
    # The data: properties of the values, known once they are read.
    CrossFieldRule("no_samples", "the data (a tensor's shape, a CSV's rows) must hold samples"),
    CrossFieldRule("no_features", "the data must hold features"),
    CrossFieldRule("no_targets", "a fit needs targets: a CSV or dataset column"),
    CrossFieldRule("too_few_samples", "a split must leave samples to train on and to test"),
    CrossFieldRule("single_class", "a classification needs two classes among the labels"),
    CrossFieldRule(
        "labels_not_integers", "class labels in a tensor must be whole numbers: its values"
    ),
    CrossFieldRule("bad_labels", "class labels must be numbers or text, not both"),
    CrossFieldRule("threshold_not_binary", "threshold applies to two classes: the labels' count"),
    CrossFieldRule("non_finite", "the values of x and y must be finite", r"NaN or infinite"),
    CrossFieldRule(
        "values_too_large",
        "the data's values must fit the dtype it is held in (float32 in the loader, whatever "
        "dtype x was sent in) and a table's bound: base64 values cannot be bounded by a schema",
        r"beyond float32's range|holds values beyond",
    ),
    CrossFieldRule("diverged", "gradient descent diverged on these values"),
    CrossFieldRule("non_finite_fit", "the fit overflowed on these values"),
    CrossFieldRule("empty_batch", "drop_last dropped the only batch: sizes of two fields"),
    CrossFieldRule("duplicate_feature", "features come from the data, and a CSV may repeat a name"),
    # The machine.
    CrossFieldRule(
        "device_unavailable",
        "a device (cuda, cuda:N) that this machine does not have: not a property of the request",
    ),
)
"""Every refusal of a request valid by the published document, with why JSON Schema cannot
state the rule. Anything else refused is a schema to fix."""


def cross_field_rule(response: Response) -> CrossFieldRule | None:
    """The rule of :data:`CROSS_FIELD_RULES` a refusal is, if any."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    code, message = body.get("code"), str(body.get("error", ""))
    for rule in CROSS_FIELD_RULES:
        if rule.code == code and (not rule.message or re.search(rule.message, message)):
            return rule
    return None


@schemathesis.check
def schema_valid_requests_are_accepted(
    ctx: CheckContext, response: Response, case: schemathesis.Case
) -> bool | None:
    """``positive_data_acceptance``, except for the refusals of :data:`CROSS_FIELD_RULES`
    and for bodies the document itself refuses."""
    if response.status_code in (400, 415, 422) and cross_field_rule(response) is not None:
        return None
    if not body_is_valid(case):
        return None
    return positive_data_acceptance(ctx, response, case)


def _as_json(value: object) -> object:
    # An uploaded file's bytes stand as the text that the document's binary strings are.
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    return value if isinstance(value, (str, int, float, bool, dict)) or value is None else "file"


def body_is_valid(case: schemathesis.Case) -> bool:
    """Whether the document admits ``case``'s body as sent. The examples phase puts the
    examples of the fields of a form together, with files for the uploads, without checking
    the rules between them (``dataset`` and ``file``); and an empty list of files sends no
    part at all (``images: []`` is no ``images``): such requests are not valid ones."""
    if case.media_type is None or case.body is None:
        return True
    body_schema = case.operation.get_body_for_media_type(case.media_type)
    if body_schema is None or not isinstance(body_schema.definition.get("schema"), dict):
        return True
    resolved = {**body_schema.definition["schema"], "components": DOCUMENT["components"]}
    body = case.body
    if isinstance(body, dict) and case.media_type.startswith("multipart/"):
        # A form holds what goes on the wire: an empty list sends no part, a field absent.
        body = {name: _as_json(value) for name, value in body.items() if value != []}
    return bool(jsonschema.Draft202012Validator(resolved).is_valid(body))


CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "phases": {
            "examples": {"enabled": True},
            # run by test_live_coverage_phase, a bounded sample of it
            "coverage": {"enabled": False},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "404", "413", "429", "503", "504"]
            },
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "413", "415", "422"]
            },
        },
        "generation": {"deterministic": True},
    }
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    schema_valid_requests_are_accepted,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    use_after_free,
    ensure_resource_availability,
    ignored_auth,
]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(LIVE_ENV, Path(tmp_path_factory.mktemp("live")) / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


def _published_document() -> dict[str, object]:
    # The document the live server publishes: the same code with the same settings (built
    # here, without serving, so that the cases exist before the server starts).
    env = {key.removeprefix("TORCHLAB_").lower(): value for key, value in LIVE_ENV.items()}
    env["calibration"] = json.loads(env["calibration"])
    document: dict[str, object] = create_app(Settings(**env)).openapi()  # type: ignore[arg-type]
    return document


DOCUMENT = _published_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:  # kept-alive connections: thousands of requests
        yield http


def as_json_parts(case: schemathesis.Case) -> schemathesis.Case:
    """``case`` with each multipart field declared as JSON (``encoding``) sent as one JSON
    part. Schemathesis sends a list of strings as one part per item, as a form sends an
    array of plain values; a field declared ``application/json`` is one JSON text, as
    Swagger UI sends it."""
    if not (case.media_type or "").startswith("multipart/") or not isinstance(case.body, dict):
        return case
    body = case.operation.get_body_for_media_type(case.media_type)
    encoding = body.definition.get("encoding", {}) if body is not None else {}
    for name, value in case.body.items():
        declared = encoding.get(name, {}).get("contentType")
        if declared == "application/json" and isinstance(value, list):
            case.body[name] = json.dumps(value)
    return case


@schema.parametrize()
@settings(
    max_examples=FUZZED_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_live_api_conforms_to_its_schema(
    case: schemathesis.Case, live_server: Server, session: requests.Session
) -> None:
    as_json_parts(case).call_and_validate(base_url=live_server.url, session=session, checks=CHECKS)


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


def coverage_sample(operation: APIOperation) -> list[schemathesis.Case]:
    """At most :data:`COVERAGE_CASES` of the coverage phase's cases for ``operation``,
    evenly spread over all of them (they come grouped by field and kind of boundary)."""
    generation = schema.config.generation_for(operation=operation, phase="coverage")
    generator = CoverageGenerator(
        operation=operation,
        generation_modes=generation.modes,
        generation_config=generation,
        auth_storage=None,
        override=Override(),
        feedback=FeedbackSources(),
    )
    cases = list(generator)
    return cases[:: max(1, math.ceil(len(cases) / COVERAGE_CASES))]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_live_coverage_phase(
    operation: APIOperation, live_server: Server, session: requests.Session
) -> None:
    failures: list[str] = []
    for case in coverage_sample(operation):
        try:
            as_json_parts(case).call_and_validate(
                base_url=live_server.url, session=session, checks=CHECKS
            )
        except Exception as exc:  # a check's failure group: every case is still sent
            scenario = getattr(case.meta.phase.data, "description", "") if case.meta else ""
            failures.append(f"{scenario}: {exc}")
    assert not failures, f"{len(failures)} failing cases:\n\n" + "\n\n".join(failures[:5])


def test_the_live_server_publishes_the_document_tested(live_server: Server) -> None:
    published = httpx.get(f"{live_server.url}/openapi.json", timeout=30).json()
    assert published == json.loads(json.dumps(_published_document()))


@dataclass
class _Answer:
    """What :func:`cross_field_rule` reads of a response."""

    content: bytes


_V2_INPUT = {"name": "input", "shape": [1], "datatype": "FP32", "data": [1.0]}


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        # x's values past float32's range: the loader's dtype, whatever x was sent in.
        ("/data/loader", {"x": [True, 5.9e74, -3.4e16], "batch_size": 1}, "values_too_large"),
        # relu takes `input`: the path names the model, the body its inputs.
        ("/v2/models/relu/infer", {"inputs": []}, "missing_input"),
        # One name, two inputs.
        ("/v2/models/relu/infer", {"inputs": [_V2_INPUT, _V2_INPUT]}, "duplicate_field"),
    ],
)
def test_schema_valid_refusals_found_by_fuzzing_are_listed_rules(
    path: str, body: dict[str, object], code: str, live_server: Server
) -> None:
    response = httpx.post(f"{live_server.url}{path}", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    rule = cross_field_rule(_Answer(response.content))  # type: ignore[arg-type]
    assert rule is not None and rule.code == code


def test_the_v2_datatypes_are_an_enum_of_what_is_accepted(live_server: Server) -> None:
    """An inference input's datatype: the protocol's names and torch's; BYTES (strings) is
    outside it, and refused with a 400 that names what is supported."""
    schema = DOCUMENT["components"]["schemas"]["RequestInput"]["properties"]["datatype"]  # type: ignore[index]
    assert "FP32" in schema["enum"] and "float32" in schema["enum"]
    assert "BYTES" not in schema["enum"]
    for datatype, status, code in (
        ("BYTES", 400, "unsupported_datatype"),
        ("FP33", 422, "invalid_dtype"),
    ):
        infer = {"inputs": [{"name": "input", "shape": [1], "datatype": datatype, "data": [1]}]}
        response = httpx.post(f"{live_server.url}/v2/models/relu/infer", json=infer, timeout=30)
        assert (response.status_code, response.json()["code"]) == (status, code)
