"""Feature-map figures and batch grids as PNG bytes: their layout from the shapes alone, the
pixels drawn, and the PNG pixel limit, without HTTP."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from service.calibration import Throughput
from service.config import Limits
from service.errors import LimitExceeded
from service.limits import Budget
from service.ops.render.images import (
    GAP,
    GRID_MIN_SIDE,
    GRID_PADDING,
    LABEL_HEIGHT,
    MAP_UNITS,
    MAX_SCALE,
    MIN_PANEL_WIDTH,
    MIN_SIDE,
    batch_grid_png,
    charge_feature_maps,
    charge_grid,
    feature_maps_png,
    figure_layout,
    grid_layout,
    input_labels,
    input_panels,
    to_uint8,
)

MAX_PNG_PIXELS = Limits.model_fields["max_png_pixels"].default
THROUGHPUT = Throughput("cpu", {"float32": 1e11, "float16": 1e9}, 1e9)


def png_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def expected_figure(
    input_shape: tuple[int, int, int, int], output_shape: tuple[int, int, int, int]
) -> tuple[int, int, int]:
    """``(width, height, scale)`` as the module documents them: one column per input panel
    (one for 1 or 3 channels, else one per channel) and per output channel, maps under
    ``MIN_SIDE`` tall enlarged by a whole factor, panels ``GAP`` apart under a label strip."""
    n, c, h, w = input_shape
    _, k, oh, ow = output_shape
    inputs = 1 if c in (1, 3) else c
    columns = [(h, w)] * inputs + [(oh, ow)] * k
    tallest = max(height for height, _ in columns)
    scale = max(1, min(MAX_SCALE, MIN_SIDE // tallest))
    width = GAP + sum(max(MIN_PANEL_WIDTH, cw * scale) + GAP for _, cw in columns)
    height = GAP + n * (LABEL_HEIGHT + tallest * scale + GAP)
    return width, height, scale


SHAPES = [
    ((1, 1, 512, 768), (1, 2, 508, 764)),  # the tutorial's photo and two feature maps
    ((2, 3, 8, 12), (2, 3, 4, 6)),  # an RGB batch, pooled
    ((1, 2, 5, 5), (1, 4, 3, 3)),  # two input channels: a panel each
    ((3, 1, 200, 30), (3, 1, 100, 15)),  # tall maps: not enlarged, narrow panels widened
]


@pytest.mark.parametrize(("input_shape", "output_shape"), SHAPES)
def test_figure_layout_sizes(
    input_shape: tuple[int, int, int, int], output_shape: tuple[int, int, int, int]
) -> None:
    layout = figure_layout(input_shape, output_shape, max_pixels=MAX_PNG_PIXELS)
    width, height, scale = expected_figure(input_shape, output_shape)
    assert (layout.width, layout.height, layout.scale) == (width, height, scale)
    inputs = len(input_labels(input_shape[1]))
    assert layout.rows == input_shape[0]
    assert layout.columns == inputs + output_shape[1]
    assert layout.panels == layout.rows * layout.columns


def test_input_labels() -> None:
    assert input_labels(1) == ["input"]
    assert input_labels(3) == ["input"]
    assert input_labels(2) == ["input[0]", "input[1]"]


@pytest.mark.parametrize(("input_shape", "output_shape"), SHAPES[1:])
def test_feature_maps_png_is_a_png_of_the_computed_size(
    input_shape: tuple[int, int, int, int], output_shape: tuple[int, int, int, int]
) -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(input_shape, generator=generator)
    outputs = torch.randn(output_shape, generator=generator)
    layout = figure_layout(input_shape, output_shape, max_pixels=MAX_PNG_PIXELS)
    labels = [f"map {k}" for k in range(output_shape[1])]
    image = png_image(feature_maps_png(inputs, outputs, labels, layout))
    assert image.size == expected_figure(input_shape, output_shape)[:2]
    assert image.mode == ("RGB" if input_shape[1] == 3 else "L")


def test_feature_maps_png_draws_each_map_scaled_to_0_255_and_enlarged() -> None:
    inputs = torch.arange(20, dtype=torch.float32).reshape(1, 1, 4, 5)
    outputs = -inputs[:, :, 1:, 1:] * 3
    layout = figure_layout(inputs.shape, outputs.shape, max_pixels=MAX_PNG_PIXELS)
    pixels = np.asarray(png_image(feature_maps_png(inputs, outputs, ["out"], layout)))
    scale = layout.scale
    top = GAP + LABEL_HEIGHT
    x = inputs[0, 0].double().numpy()
    expected_input = np.round((x - x.min()) * 255 / (x.max() - x.min())).astype(np.uint8)
    expected_input = expected_input.repeat(scale, axis=0).repeat(scale, axis=1)
    drawn = pixels[top : top + 4 * scale, GAP : GAP + 5 * scale]
    np.testing.assert_array_equal(drawn, expected_input)
    left = GAP + layout.widths[0] + GAP
    expected_output = to_uint8(outputs[0, 0]).repeat(scale, axis=0).repeat(scale, axis=1)
    drawn = pixels[top : top + 3 * scale, left : left + 4 * scale]
    np.testing.assert_array_equal(drawn, expected_output)
    assert drawn[0, 0] == 255  # the output's maximum (its top-left) is white
    assert drawn[-1, -1] == 0


def test_to_uint8_scales_the_finite_range() -> None:
    values = torch.tensor([[-2.0, 0.0, 2.0], [float("nan"), float("inf"), 1.0]])
    reference = np.round((np.array([-2.0, 0.0, 2.0, 1.0]) + 2) * 255 / 4).astype(np.uint8)
    scaled = to_uint8(values)
    assert scaled.dtype == np.uint8
    np.testing.assert_array_equal(scaled[0], reference[:3])
    assert scaled[1, 2] == reference[3]
    assert scaled[1, 0] == 0  # NaN and infinities are black
    assert scaled[1, 1] == 0
    assert not to_uint8(torch.full((2, 2), 7.0)).any()


def test_the_png_pixel_limit_is_the_configured_one() -> None:
    shapes = ((1, 1, 512, 768), (1, 2, 508, 764))
    width, height, _ = expected_figure(*shapes)
    exact = figure_layout(*shapes, max_pixels=width * height)
    assert exact.width * exact.height == width * height
    with pytest.raises(LimitExceeded) as caught:
        figure_layout(*shapes, max_pixels=width * height - 1)
    assert caught.value.status_code == 413
    assert caught.value.code == "png_pixels_limit"
    assert caught.value.details["limit"] == "max_png_pixels"
    assert caught.value.details["allowed"] == width * height - 1
    assert caught.value.details["requested"] == width * height


def test_grid_layout_and_its_pixel_limit() -> None:
    layout = grid_layout(10, 8, 8, 4, max_pixels=MAX_PNG_PIXELS)
    scale = max(1, min(MAX_SCALE, GRID_MIN_SIDE // 8))
    assert layout.scale == scale
    assert layout.rows == 3
    assert layout.width == 4 * (8 * scale + GRID_PADDING) + GRID_PADDING
    assert layout.height == 3 * (8 * scale + LABEL_HEIGHT + GRID_PADDING) + GRID_PADDING
    with pytest.raises(LimitExceeded) as caught:
        grid_layout(10, 8, 8, 4, max_pixels=layout.width * layout.height - 1)
    assert caught.value.code == "png_pixels_limit"
    assert caught.value.details["requested"] == layout.width * layout.height


def test_batch_grid_png_is_a_png_of_the_layouts_size() -> None:
    batch = torch.rand(5, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    layout = grid_layout(5, 10, 12, 3, max_pixels=MAX_PNG_PIXELS)
    image = png_image(batch_grid_png(batch, [f"class {i}" for i in range(5)], layout))
    assert image.size == (layout.width, layout.height)
    assert image.mode == "RGB"


# --- the figures' layouts from counts, their drawing charged ---------------------------------


def test_a_layout_of_millions_of_panels_is_refused_from_the_counts() -> None:
    """An input of 2**25 channels would be 2**25 panels: refused from the arithmetic, before
    a list of a label or a width per panel is made."""
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        figure_layout((1, 1 << 25, 1, 1), (1, 1, 1, 1), max_pixels=MAX_PNG_PIXELS)
    assert info.value.code == "png_pixels_limit"
    assert time.perf_counter() - start < 0.1
    assert input_panels(1 << 25) == 1 << 25 and input_panels(3) == input_panels(1) == 1


def test_drawing_a_figure_is_charged_per_panel_and_pixel() -> None:
    shapes = ((2, 3, 8, 12), (2, 3, 4, 6))
    layout = figure_layout(*shapes, max_pixels=MAX_PNG_PIXELS)
    spent = Budget(1 << 30, 1 << 32, 1e15, throughput=THROUGHPUT)
    charge_feature_maps(layout, *shapes, spent)
    assert spent.objects == layout.panels == 2 * (1 + 3)
    maps = (2 * 3 * 8 * 12 + 2 * 3 * 4 * 6) * layout.scale**2
    assert spent.seconds >= maps * MAP_UNITS / THROUGHPUT.elements_per_s
    grid = grid_layout(10, 8, 8, 4, max_pixels=MAX_PNG_PIXELS)
    cells = Budget(1 << 30, 1 << 32, 1e15, throughput=THROUGHPUT, max_objects=9)
    with pytest.raises(LimitExceeded) as info:
        charge_grid(grid, 1, 8, 8, cells, max_pixels=MAX_PNG_PIXELS)
    assert info.value.code == "objects_limit"
