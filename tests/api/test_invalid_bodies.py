"""A body of many invalid items is refused after its first: a long list stops at its first
invalid item, an object or a mapping is measured before its entries are validated, and a
program may not hold more steps than any configuration runs. pydantic made an error for
each invalid item (half a million in a megabyte: seconds of the server's interpreter), on
every way a body is read: in a thread of the server, in a body worker, V2 inference."""

from __future__ import annotations

import importlib
import pkgutil
import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

import schemas
from schemas.activations import ActivateRequest
from schemas.common import MAX_KEYS, MAX_TENSORS, StrictModel, Tensor
from schemas.regression import PredictRequest
from schemas.tensors import MAX_STEPS
from service.api.bodies import PROCESS_BODY_BYTES

ITEMS = 490_000
"""Invalid items of a body read by a thread of the server: ``1,`` each, under 1 MiB."""
WORKER_ITEMS = 700_000
"""Invalid items of a body read by a body worker (over 1 MiB, and many values)."""


def _post(client: TestClient, path: str, body: bytes) -> tuple[Any, float]:
    start = time.perf_counter()
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    return response, time.perf_counter() - start


def _errors(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text[:500]
    payload = response.json()
    assert payload["code"] == "validation_error"
    errors: list[dict[str, Any]] = payload["details"]["errors"]
    return errors


def _ones(count: int) -> bytes:
    return b"1," * (count - 1) + b"1"


def _sum_of_ones(count: int) -> tuple[Any, float]:
    """The baseline: a body of as many numbers, in an inline tensor, summed."""
    return (
        b'{"inputs":{"a":[' + _ones(count) + b']},"steps":[{"op":"sum","x":"a","out":"s"}]}',
        count,
    )


def test_many_invalid_steps_are_one_error_read_in_a_thread(client: TestClient) -> None:
    tensor_body, count = _sum_of_ones(ITEMS)
    answer, baseline = _post(client, "/tensor/ops", tensor_body)
    # Inline tensors hold millions of numbers legitimately: not refused, not slowed.
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["outputs"]["s"]["data"] == count
    body = b'{"steps":[' + _ones(ITEMS) + b"]}"
    assert len(body) <= PROCESS_BODY_BYTES
    refused, took = _post(client, "/tensor/ops", body)
    errors = _errors(refused)
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "steps", 0], "model_attributes_type")
    ]
    assert took < 2 * baseline + 0.2, (took, baseline)  # it made 490,000 errors: seconds


def test_many_invalid_steps_are_one_error_read_by_a_body_worker(
    client: TestClient, body_worker_calls: list[str]
) -> None:
    tensor_body, count = _sum_of_ones(WORKER_ITEMS)
    answer, baseline = _post(client, "/tensor/ops", tensor_body)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["outputs"]["s"]["data"] == count
    body = b'{"steps":[' + _ones(WORKER_ITEMS) + b"]}"
    assert len(body) > PROCESS_BODY_BYTES
    body_worker_calls.clear()
    refused, took = _post(client, "/tensor/ops", body)
    assert body_worker_calls == ["compact_body"]
    errors = _errors(refused)
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "steps", 0], "model_attributes_type")
    ]
    assert took < 2 * baseline + 0.2, (took, baseline)


def test_more_steps_than_any_configuration_runs_are_refused_before_they_are_read(
    client: TestClient,
) -> None:
    steps = orjson.dumps([{"op": "neg", "x": "a"}] * (MAX_STEPS + 1))
    errors = _errors(_post(client, "/tensor/ops", b'{"steps":' + steps + b"}")[0])
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "steps"], "too_long")]
    assert f"at most {MAX_STEPS} items" in errors[0]["msg"]


def test_an_object_of_many_keys_is_one_error(client: TestClient) -> None:
    keys = b"".join(b'"k%d":1,' % i for i in range(100_000))
    body = b"{" + keys + b'"steps":[{"op":"neg","x":"a"}]}'
    errors = _errors(_post(client, "/tensor/ops", body)[0])
    assert [(e["loc"], e["type"]) for e in errors] == [(["body"], "too_long")]
    assert errors[0]["msg"] == f"Object should have at most {MAX_KEYS} keys, not 100001"
    step = b'{"op":"neg","x":"a",' + keys[:-1] + b"}"
    errors = _errors(_post(client, "/tensor/ops", b'{"steps":[' + step + b"]}")[0])
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "steps", 0, "neg"], "too_long")]


def test_a_mapping_of_many_invalid_names_is_one_error(client: TestClient) -> None:
    inputs = b",".join(b'"%d":1' % i for i in range(100_000))
    body = b'{"inputs":{' + inputs + b'},"steps":[{"op":"neg","x":"a"}]}'
    errors = _errors(_post(client, "/tensor/ops", body)[0])
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "inputs"], "too_long")]
    assert errors[0]["msg"] == f"Dictionary should have at most {MAX_TENSORS} items, not 100000"
    grad = b'{"expression":"x","inputs":{' + inputs + b"}}"
    errors = _errors(_post(client, "/grad", grad)[0])
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "inputs"], "too_long")]


@pytest.mark.parametrize(
    ("entry", "loc"),
    [
        pytest.param(b'"outputs":[' + _ones(ITEMS) + b"]", ["body", "outputs", 0], id="outputs"),
        pytest.param(
            b'"inputs":[{"name":"input","datatype":"FP32","data":[1],"shape":['
            + b"true," * ITEMS
            + b"true]}]",
            ["body", "inputs", 0, "shape", 0],
            id="shape",
        ),
    ],
)
def test_an_inference_request_of_many_invalid_items_is_one_error(
    client: TestClient, entry: bytes, loc: list[Any]
) -> None:
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[1]}],' + entry + b"}"
    if entry.startswith(b'"inputs"'):
        body = b"{" + entry + b"}"
    errors = _errors(_post(client, "/v2/models/relu/infer", body)[0])
    assert [e["loc"] for e in errors] == [loc]


def _error_count(model: type[BaseModel], data: Any) -> int:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value.error_count()


def test_lists_of_a_models_numbers_and_a_functions_parameters_stop_at_their_first_error() -> None:
    # Their errors are more than the 20 an answer lists: counted at pydantic's own answer.
    many = 100_000
    linear = {"kind": "linear", "coef": ["a"] * many, "intercept": ["a"] * many, "features": [1]}
    assert _error_count(PredictRequest, {"model": linear, "x": [[1.0]]}) <= 8
    params = {f"p{i}": ["a"] * 4096 for i in range(16)}
    assert _error_count(ActivateRequest, {"params": params}) <= 16 * 8
    logistic = {"kind": "logistic", "classes": [[]] * many, "coef": [0.0], "features": ["x"]}
    assert _error_count(PredictRequest, {"model": logistic, "x": [[1.0]]}) <= 4


# -- every request model, read as pydantic validates it ------------------------------------


def _request_models() -> list[type[StrictModel]]:
    found: dict[str, type[StrictModel]] = {}
    for info in pkgutil.iter_modules(schemas.__path__):
        module = importlib.import_module(f"schemas.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, StrictModel):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


SHORT_LIST = 64
"""A list bounded at most at this many items may list an error for each."""


def _unbounded(
    schema: dict[str, Any], where: str, found: list[str], measured: bool = False
) -> None:
    """Every list in ``schema`` that may hold more than :data:`SHORT_LIST` items without
    stopping at its first invalid one, and every mapping measured only after its entries
    (``measured``: under :func:`schemas.common.at_most`)."""
    kind = schema.get("type")
    if kind == "model" and issubclass(schema["cls"], Tensor):
        return  # a tensor's data is read by the codec, never item by item
    if kind in ("list", "set", "tuple"):
        most = schema.get("max_length")
        if most is None or (most > SHORT_LIST and not schema.get("fail_fast")):
            found.append(f"{where}: a {kind} of at most {most} items, fail_fast off")
    if kind == "function-before" and "at_most" in schema["function"]["function"].__qualname__:
        measured = True
    elif kind == "dict":
        keys, values = schema.get("keys_schema", {}), schema.get("values_schema", {})
        free = keys.get("type") == "str" and len(keys) == 1 and values.get("type") == "any"
        if not (free or measured):  # its keys or values can be invalid, each an error
            found.append(f"{where}: a dict not measured before its entries")
        measured = False
    for key, value in schema.items():
        for entry in value if isinstance(value, list) else [value]:
            item = entry[0] if isinstance(entry, tuple) else entry  # a union's (schema, label)
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                _unbounded(item, f"{where}.{key}", found, measured and key == "schema")
            elif isinstance(item, dict) and key in ("fields", "choices"):
                for name, field in item.items():
                    _unbounded(field, f"{where}.{name}", found)


def test_every_long_list_of_a_request_stops_at_its_first_invalid_item() -> None:
    found: list[str] = []
    for model in _request_models():
        _unbounded(dict(model.__pydantic_core_schema__), model.__name__, found)
    assert found == []


def test_every_request_model_takes_fewer_keys_than_an_object_may_hold() -> None:
    for model in _request_models():
        assert len(model.model_fields) < MAX_KEYS, model.__name__
