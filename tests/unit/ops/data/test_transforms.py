"""Transform pipelines: built from a request's parameters, their output sizes predicted
before they run, and applied as torchvision applies them (the random ones under the
seed, without touching the process's generator)."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from service.errors import InvalidInput, LimitExceeded, OpError
from service.ops.data.transforms import (
    DEFAULT_TRANSFORMS,
    MAX_TRANSFORM_SIDE,
    TRANSFORMS,
    apply_pipeline,
    build_pipeline,
    build_transform,
    plan_pipeline,
    predict_shape,
    predicts_exactly,
)
from tests.unit.ops.data.helpers import BIG, budget, pixels

PHOTO = Image.fromarray(pixels(30, 40, seed=7))
GRAY = Image.fromarray(pixels(12, 9, channels=1, seed=8))


def _apply(specs: list[dict[str, Any]] | None, images: list[Image.Image], seed: int = 0) -> Any:
    return apply_pipeline(images, build_pipeline(specs), seed=seed, max_elements=BIG)


def test_the_allowed_transforms_are_torchvisions() -> None:
    assert all(isinstance(getattr(v2, name), type) for name in TRANSFORMS)


def test_the_default_pipeline_is_to_tensor() -> None:
    (result,) = _apply(None, [PHOTO])
    expected = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(PHOTO)
    torch.testing.assert_close(result, expected.as_subclass(torch.Tensor))
    assert [step.label for step in build_pipeline(None)] == [
        "ToImage()",
        "ToDtype(dtype='float32', scale=True)",
    ]
    assert len(DEFAULT_TRANSFORMS) == 2


DETERMINISTIC: list[tuple[list[dict[str, Any]], list[Any]]] = [
    ([{"name": "Resize", "size": [16, 20]}], [v2.Resize((16, 20))]),
    ([{"name": "Resize", "size": [10], "max_size": 12}], [v2.Resize([10], max_size=12)]),
    ([{"name": "CenterCrop", "size": [8, 8]}], [v2.CenterCrop((8, 8))]),
    ([{"name": "Pad", "padding": [1, 2, 3, 4]}], [v2.Pad((1, 2, 3, 4))]),
    ([{"name": "Grayscale", "num_output_channels": 3}], [v2.Grayscale(3)]),
    (
        [{"name": "GaussianBlur", "kernel_size": [3, 5], "sigma": [1.2, 1.2]}],
        [v2.GaussianBlur((3, 5), sigma=(1.2, 1.2))],
    ),
    (
        [
            {"name": "ToImage"},
            {"name": "ToDtype", "dtype": "float64", "scale": True},
            {"name": "Normalize", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25]},
        ],
        [
            v2.ToImage(),
            v2.ToDtype(torch.float64, scale=True),
            v2.Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.25)),
        ],
    ),
]


@pytest.mark.parametrize(("specs", "transforms"), DETERMINISTIC)
def test_transforms_as_torchvision_applies_them(
    specs: list[dict[str, Any]], transforms: list[Any]
) -> None:
    (result,) = _apply(specs, [PHOTO])
    expected = v2.Compose([*transforms, v2.ToImage()])(PHOTO)
    torch.testing.assert_close(result, expected.as_subclass(torch.Tensor))


RANDOM = [
    {"name": "RandomResizedCrop", "size": [12, 16], "scale": [0.3, 1.0], "antialias": True},
    {"name": "RandomHorizontalFlip", "p": 0.5},
    {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4},
    {"name": "RandomRotation", "degrees": 20},
    {"name": "GaussianBlur", "kernel_size": 3},
    {"name": "ToImage"},
    {"name": "ToDtype", "dtype": "float32", "scale": True},
    {"name": "RandomErasing", "p": 0.5},
]


def test_random_transforms_draw_as_torch_manual_seed_draws() -> None:
    images = [PHOTO, PHOTO.transpose(Image.Transpose.FLIP_TOP_BOTTOM), PHOTO]
    state = torch.get_rng_state()
    results = _apply(RANDOM, images, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the process's generator is untouched
    pipeline = v2.Compose(
        [
            v2.RandomResizedCrop((12, 16), scale=(0.3, 1.0), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ColorJitter(brightness=0.4, contrast=0.4),
            v2.RandomRotation(20),
            v2.GaussianBlur(3),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(0.5),
        ]
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = [pipeline(image).as_subclass(torch.Tensor) for image in images]
    for result, wanted in zip(results, expected, strict=True):
        torch.testing.assert_close(result, wanted)
    again = _apply(RANDOM, images, seed=5)
    other = _apply(RANDOM, images, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(results, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(results, other, strict=True))


SHAPES = [
    {"name": "Resize", "size": [16, 20]},
    {"name": "Resize", "size": [10]},
    {"name": "Resize", "size": [10], "max_size": 12},
    {"name": "Resize", "size": None, "max_size": 25},
    {"name": "CenterCrop", "size": [50, 7]},
    {"name": "RandomCrop", "size": [8, 9]},
    {"name": "RandomCrop", "size": [40, 50], "pad_if_needed": True},
    {"name": "RandomCrop", "size": [8, 8], "padding": [2, 3]},
    {"name": "RandomResizedCrop", "size": [11, 13]},
    {"name": "Pad", "padding": 3},
    {"name": "Pad", "padding": [1, 2]},
    {"name": "Pad", "padding": [1, 2, 3, 4]},
    {"name": "Grayscale", "num_output_channels": 1},
    {"name": "RandomRotation", "degrees": 30},
    {"name": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1]},
    {"name": "RandomPerspective", "p": 1.0},
    {"name": "ColorJitter", "hue": 0.1},
    {"name": "GaussianBlur", "kernel_size": 3},
    {"name": "ToImage"},
]


@pytest.mark.parametrize("image", [PHOTO, GRAY], ids=["rgb", "gray"])
@pytest.mark.parametrize("spec", SHAPES, ids=lambda spec: spec["name"])
def test_predicted_shapes_are_the_real_ones(spec: dict[str, Any], image: Image.Image) -> None:
    pipeline = build_pipeline([spec, {"name": "ToImage"}])
    start = (len(image.getbands()), image.height, image.width)
    shape, _ = predict_shape(pipeline[0], start)
    (result,) = apply_pipeline([image], pipeline, seed=1, max_elements=BIG)
    assert predicts_exactly(pipeline)
    assert shape == tuple(result.shape)


def test_an_expanding_rotation_is_bounded() -> None:
    pipeline = build_pipeline([{"name": "RandomRotation", "degrees": [30, 30], "expand": True}])
    shape, _ = predict_shape(pipeline[0], (3, PHOTO.height, PHOTO.width))
    (result,) = apply_pipeline([PHOTO], pipeline, seed=0, max_elements=BIG)
    assert not predicts_exactly(pipeline)
    assert shape[0] == result.shape[0]
    assert shape[1] >= result.shape[1] and shape[2] >= result.shape[2]
    assert shape[1] == math.ceil(math.hypot(PHOTO.height, PHOTO.width)) + 1


def test_the_plan_charges_every_pictures_output() -> None:
    spent = budget()
    shapes = plan_pipeline(
        [PHOTO, GRAY], build_pipeline([{"name": "Resize", "size": [4, 5]}]), spent
    )
    assert shapes == [(3, 4, 5), (1, 4, 5)]
    assert spent.elements == 3 * 4 * 5 + 1 * 4 * 5
    assert spent.flops > 0


def test_an_output_over_the_limit_is_refused_before_it_runs() -> None:
    pipeline = build_pipeline([{"name": "Resize", "size": [4000, 4000]}])
    start = time.process_time()
    with pytest.raises(LimitExceeded) as info:
        plan_pipeline([PHOTO], pipeline, budget(max_elements=1 << 20))
    assert time.process_time() - start < 0.5
    assert info.value.details["requested"] == 3 * 4000 * 4000
    padded = build_pipeline([{"name": "RandomCrop", "size": [8, 8], "padding": 3000}])
    with pytest.raises(LimitExceeded):  # the padded intermediate, not the small output
        plan_pipeline([PHOTO], padded, budget(max_elements=1 << 20))


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"name": "Rotate"}, "unknown_transform"),
        ({"name": "Resize", "sise": 4}, "unknown_param"),
        ({"name": "CenterCrop"}, "missing_param"),
        ({"name": "GaussianBlur", "kernel_size": 4}, "invalid_param"),
        ({"name": "Resize", "size": [MAX_TRANSFORM_SIDE + 1]}, "invalid_param"),
        ({"name": "Pad", "padding": -1}, "invalid_param"),
        ({"name": "ToDtype", "dtype": "float99"}, "invalid_dtype"),
    ],
)
def test_build_refusals(spec: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        build_transform(spec, 0)
    assert info.value.code == code
    assert info.value.message.startswith("transforms[0]")


def test_transforms_never_modify_their_input() -> None:
    (step,) = build_pipeline([{"name": "RandomErasing", "p": 1.0, "inplace": True}])
    assert step.transform.inplace is False


def test_what_torchvision_refuses_at_run_time() -> None:
    pipeline = build_pipeline(
        [{"name": "ToImage"}, {"name": "Normalize", "mean": [0.5], "std": [0.5]}]
    )
    with pytest.raises(OpError) as info:
        apply_pipeline([GRAY], pipeline, seed=0, max_elements=BIG)
    assert info.value.code == "transform_failed"
    assert info.value.details == {"transform": "Normalize", "index": 1}
