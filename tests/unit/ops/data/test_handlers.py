"""/data/loader and /data/images without HTTP: every refusal in prepare (before a compute
slot), plans that pickle, and compute's content as torch computes it."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_iris
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from schemas.datasets import DataLoaderRequest
from schemas.images import DataImagesRequest
from service.errors import InvalidInput, LimitExceeded
from service.limits import Deadline
from service.ops.context import ComputeContext
from service.ops.data.handlers import (
    compute_data_images,
    compute_data_loader,
    prepare_data_images,
    prepare_data_loader,
)
from service.ops.data.tables import Upload
from service.ops.render.images import grid_layout
from service.ops.render.png import Png, panel_headers
from tests.unit.ops.data.helpers import limits, make_zip, pixels, png

CPU = torch.device("cpu")


def _ctx(**values: int) -> ComputeContext:
    return ComputeContext(limits(**values), CPU)


def _deadline() -> Deadline:
    return Deadline(60.0)


def test_the_loader_from_request_to_content() -> None:
    body = DataLoaderRequest(dataset="iris", batch_size=10, shuffle=True, seed=4, include_data=True)
    ctx = _ctx()
    plan = prepare_data_loader(ctx, body, None)
    assert ctx.budget.elements >= 150 * 4
    pickle.dumps(plan)  # a plan carries data, not closures
    content = compute_data_loader(plan, _deadline())
    iris = load_iris()
    assert content["dataset"] == "iris" and content["task"] == "classification"
    assert (content["n_samples"], content["n_features"], content["n_batches"]) == (150, 4, 15)
    assert (content["x_dtype"], content["y_dtype"]) == ("float32", "int64")
    assert content["features"] == list(iris.feature_names)
    order = next(
        iter(
            DataLoader(
                range(150), batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(4)
            )
        )
    )
    (first,) = content["batches"]
    assert first["indices"] == order.tolist()
    torch.testing.assert_close(first["x"], torch.from_numpy(iris.data[order.numpy()]).float())


def test_a_csv_upload_to_the_loader() -> None:
    upload = Upload(b"a,b,label\n1,2,cat\n3,4,dog\n", "pets.csv")
    plan = prepare_data_loader(_ctx(), DataLoaderRequest(batch_size=2), upload)
    content = compute_data_loader(plan, _deadline())
    assert content["dataset"] == "pets.csv" and content["classes"] == ["cat", "dog"]


def test_the_loaders_limits_are_checked_in_prepare() -> None:
    body = DataLoaderRequest(dataset="iris", batch_size=150, include_data=True)
    with pytest.raises(LimitExceeded) as info:
        prepare_data_loader(_ctx(max_total_elements=1000), body, None)
    assert info.value.code == "total_elements_limit"


def test_digits_from_request_to_content() -> None:
    body = DataImagesRequest(dataset="digits", batch_size=8, max_images=40, include_data=True)
    ctx = _ctx()
    plan = prepare_data_images(ctx, body)
    # The pictures, their float32 outputs and the first batch of 8 stacked.
    assert ctx.budget.elements == 2 * 40 * 64 + 8 * 64
    pickle.dumps(plan)
    content = compute_data_images(plan, _deadline())
    assert isinstance(content, dict)
    digits = load_digits()
    values = np.rint(digits.images[:40] * 255 / 16).astype(np.uint8)
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    expected = torch.stack([to_tensor(Image.fromarray(v)) for v in values[:8]])
    torch.testing.assert_close(content["batch"]["x"], expected.as_subclass(torch.Tensor))
    assert content["batch"]["targets"] == digits.target[:8].tolist()
    scaled = values.astype(np.float32) / np.float32(255)
    assert content["mean"] == pytest.approx([scaled.astype(np.float64).mean()], rel=1e-7)
    assert content["std"] == pytest.approx([scaled.astype(np.float64).std(ddof=1)], rel=1e-7)
    assert (content["n_images"], content["n_batches"], content["image_shape"]) == (40, 5, [1, 8, 8])


def test_uploads_and_an_archive_as_sources() -> None:
    pictures = [pixels(6, 6, seed=i) for i in range(3)]
    uploads = [Upload(png(p), f"{i}.png") for i, p in enumerate(pictures)]
    body = DataImagesRequest.model_validate({"labels": ["b", "a", "b"], "batch_size": 3})
    content = compute_data_images(prepare_data_images(_ctx(), body, uploads), _deadline())
    assert isinstance(content, dict)
    assert content["classes"] == ["a", "b"] and content["batch"]["targets"] == [1, 0, 1]
    archive = Upload(make_zip({f"c{i}/{i}.png": png(p) for i, p in enumerate(pictures)}), "a.zip")
    content = compute_data_images(
        prepare_data_images(_ctx(), DataImagesRequest(), archive=archive), _deadline()
    )
    assert isinstance(content, dict)
    assert content["source"] == "archive" and content["classes"] == ["c0", "c1", "c2"]


@pytest.mark.parametrize(
    ("body", "uploads", "code"),
    [
        ({}, 0, "missing_input"),
        ({"dataset": "digits"}, 1, "ambiguous_input"),
        ({"labels": ["a"], "dataset": None}, 0, "missing_input"),
        ({"images": ["AAAA"], "labels": ["a", "b"]}, 0, "shape_mismatch"),
    ],
)
def test_source_refusals(body: dict[str, Any], uploads: int, code: str) -> None:
    files = [Upload(png(pixels(2, 2)), "a.png")] * uploads
    with pytest.raises(InvalidInput) as info:
        prepare_data_images(_ctx(), DataImagesRequest.model_validate(body), files)
    assert info.value.code == code


def test_labels_without_pictures_to_name() -> None:
    body = DataImagesRequest.model_validate({"labels": ["a"]})
    archive = Upload(make_zip({"c/a.png": png(pixels(2, 2))}), "a.zip")
    with pytest.raises(InvalidInput) as info:
        prepare_data_images(_ctx(), body, archive=archive)
    assert info.value.code == "invalid_input"


@pytest.mark.parametrize(
    ("chosen", "code"),
    [
        ({"max_archive_entries": 1}, "archive_entries_limit"),
        ({"max_archive_entry_bytes": 10}, "archive_entry_bytes_limit"),
        ({"max_image_pixels": 3}, "image_pixels_limit"),
        ({"max_total_elements": 20}, "total_elements_limit"),
    ],
)
def test_the_images_limits_are_checked_in_prepare(chosen: dict[str, int], code: str) -> None:
    archive = Upload(make_zip({f"c/{i}.png": png(pixels(2, 2, seed=i)) for i in range(2)}), "a.zip")
    with pytest.raises(LimitExceeded) as info:
        prepare_data_images(_ctx(**chosen), DataImagesRequest(), archive=archive)
    assert info.value.code == code


def test_a_png_grid() -> None:
    body = DataImagesRequest(dataset="digits", batch_size=12, columns=5, format="png")
    content = compute_data_images(prepare_data_images(_ctx(), body), _deadline())
    assert isinstance(content, Png)
    layout = grid_layout(12, 8, 8, 5, max_pixels=1 << 30)
    assert content.headers == panel_headers(12, layout.rows, layout.columns)
    assert Image.open(io.BytesIO(content.data)).size == (layout.width, layout.height)
    with pytest.raises(LimitExceeded) as info:  # refused before any transform runs
        prepare_data_images(_ctx(max_png_pixels=layout.width * layout.height - 1), body)
    assert info.value.code == "png_pixels_limit"
