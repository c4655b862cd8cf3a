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
from service.ops.data import transforms
from service.ops.data.image_sets import builtin_images
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
from tests.unit.ops.data.helpers import BIG, budget, pixels, timed_budget

PHOTO = Image.fromarray(pixels(30, 40, seed=7))
LARGE = Image.fromarray(pixels(512, 512, seed=9))
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


# --- every transform charged by what torchvision does ------------------------------------------


def test_a_blur_is_charged_as_the_full_2d_convolution_it_is() -> None:
    spent = budget()
    plan_pipeline([PHOTO], build_pipeline([{"name": "GaussianBlur", "kernel_size": [5, 3]}]), spent)
    assert spent.flops == 2 * 3 * 30 * 40 * (5 * 3)


def test_the_sample_photos_under_a_huge_blur_are_refused_at_once() -> None:
    """Resize to 1024² then an 801×801 blur: 2 · 801² multiply-adds per output element,
    1.35e12 FLOPs a photo (minutes), not the separable 2 · (kh + kw) once charged."""
    photos = builtin_images("sample_images", None, budget()).images
    pipeline = build_pipeline(
        [{"name": "Resize", "size": [1024, 1024]}, {"name": "GaussianBlur", "kernel_size": 801}]
    )
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        plan_pipeline(photos, pipeline, timed_budget(max_elements=1 << 25, max_flops=2e12))
    assert info.value.code in ("flops_limit", "over_time_budget")
    assert time.perf_counter() - start < 0.5
    smaller = build_pipeline(
        [{"name": "Resize", "size": [256, 256]}, {"name": "GaussianBlur", "kernel_size": 31}]
    )
    spent = timed_budget(max_elements=1 << 25, max_flops=2e12)
    assert plan_pipeline(photos, smaller, spent) == [(3, 256, 256)] * 2
    assert spent.flops >= 2 * 2 * 3 * 256 * 256 * 31 * 31
    assert spent.seconds < 30


def test_a_blur_is_charged_in_the_dtype_it_runs_in() -> None:
    def seconds(dtype: str) -> float:
        specs = [
            {"name": "ToImage"},
            {"name": "ToDtype", "dtype": dtype, "scale": True},
            {"name": "GaussianBlur", "kernel_size": 9},
        ]
        spent = timed_budget()
        plan_pipeline([LARGE], build_pipeline(specs), spent)
        return spent.seconds

    # float16 runs in float32 (at 1e11 FLOP/s, not float16's 1e9), converted there and back.
    assert seconds("float32") < seconds("float16") < 1.5 * seconds("float32")
    # A float64 convolution unfolds its input on the CPU: kh·kw values per output element.
    specs = [
        {"name": "ToImage"},
        {"name": "ToDtype", "dtype": "float64", "scale": True},
        {"name": "GaussianBlur", "kernel_size": 31},
    ]
    with pytest.raises(LimitExceeded) as info:
        plan_pipeline([PHOTO], build_pipeline(specs), budget(max_elements=30 * 40 * 31 * 31 - 1))
    assert info.value.code == "elements_limit"


def test_a_resize_is_charged_by_its_kernels_taps() -> None:
    def flops_per_output(size: int) -> float:
        spent = budget()
        (shape,) = plan_pipeline(
            [LARGE], build_pipeline([{"name": "Resize", "size": [size, size]}]), spent
        )
        return spent.flops / math.prod(shape)

    # Shrinking 32× reads 65 taps per axis (antialiased), shrinking 2× five.
    assert flops_per_output(16) > 8 * flops_per_output(256)
    nearest = budget()
    plan_pipeline(
        [LARGE],
        build_pipeline([{"name": "Resize", "size": [16, 16], "interpolation": "nearest"}]),
        nearest,
    )
    assert nearest.flops == 0


def test_a_crop_larger_than_the_picture_is_charged_its_padding() -> None:
    pipeline = build_pipeline([{"name": "CenterCrop", "size": [0, 60_000]}])
    with pytest.raises(LimitExceeded) as info:
        plan_pipeline([PHOTO], pipeline, budget(max_elements=1 << 20))
    assert info.value.details["requested"] == 3 * 30 * 60_000


def test_each_call_of_a_transform_on_a_picture_is_charged() -> None:
    digits = builtin_images("digits", None, budget()).images
    blurs = build_pipeline([{"name": "GaussianBlur", "kernel_size": 3}] * 16)
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        plan_pipeline(digits, blurs, timed_budget(request_timeout_s=10.0))
    assert info.value.code == "over_time_budget"
    assert time.perf_counter() - start < 0.5
    plan_pipeline(digits[:100], blurs, timed_budget(request_timeout_s=10.0))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_blur_runs_in_float32_and_is_charged_so(
    dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's depthwise conv2d of 16-bit floats on a CPU did not finish in minutes for a
    21×21 kernel; the blur converts the picture to float32 and back, and is charged as
    float32 work with those conversions."""
    blur = {"name": "GaussianBlur", "kernel_size": 21, "sigma": 5.0}
    specs = [{"name": "ToImage"}, {"name": "ToDtype", "dtype": dtype, "scale": True}, blur]
    (result,) = _apply(specs, [PHOTO])
    half = getattr(torch, dtype)
    as_float = v2.ToDtype(half, scale=True)(v2.ToImage()(PHOTO)).to(torch.float32)
    expected = v2.GaussianBlur(21, sigma=5.0)(as_float).to(half)
    assert result.dtype == half
    assert torch.equal(result, expected.as_subclass(torch.Tensor))
    convolutions: list[torch.dtype] = []
    charge = transforms.charge_conv2d
    monkeypatch.setattr(
        transforms,
        "charge_conv2d",
        lambda *args, **kwargs: convolutions.append(kwargs["dtype"]) or charge(*args, **kwargs),
    )
    plan_pipeline([PHOTO], build_pipeline(specs), budget())
    assert convolutions == [torch.float32]
