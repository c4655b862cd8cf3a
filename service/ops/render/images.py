"""Pictures of pictures: feature maps side by side (``/conv``, ``/pool``) and a grid of a
batch of images (``/data/images``), as PNG bytes.

Drawn with Pillow at the maps' own pixel size (matplotlib's ``imshow`` would resample them);
each map is scaled to 0–255 on its own (its minimum black, its maximum white) and labelled
above. Maps smaller than :data:`MIN_SIDE` pixels are enlarged by one whole factor, the same
for every panel, with nearest-neighbour so that pixels stay visible.

The size of a figure is known from the shapes alone (:func:`feature_layout`,
:func:`grid_layout`), so a figure over the configured ``max_png_pixels`` is refused before
anything is computed for it.
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from service.errors import InvalidInput, LimitExceeded
from service.limits import Budget

LABEL_HEIGHT = 20
"""Pixels of the label strip above each panel."""
GAP = 8
"""Pixels between feature-map panels and around them."""
MIN_PANEL_WIDTH = 64
"""A panel is at least this wide, so that its label fits."""
MIN_SIDE = 128
"""Feature maps of a smaller height are enlarged by a whole factor…"""
GRID_MIN_SIDE = 64
"""…and grid cells of a smaller height and width too…"""
MAX_SCALE = 16
"""…by at most this factor."""
GRID_PADDING = 2
"""``torchvision.utils.make_grid``'s default padding between cells."""
PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNG: fast; feature maps of photos barely compress anyway."""
PANEL_SECONDS = 5e-4
"""Predicted time of one panel or grid cell beyond its pixels: a Pillow image made, pasted
and labelled (its text laid out)."""
MAP_UNITS = 64
"""Elementwise passes per pixel of a map drawn: scaled to 0–255 in float64 (a dozen passes
with their copies), converted, enlarged and pasted."""
CANVAS_UNITS = 8
"""Elementwise passes per byte of the canvas: filled, and encoded by zlib."""
GRID_UNITS = 6
"""Elementwise passes per element of a grid's enlarged pictures and of its canvas (float32
copies: enlarged, padded, laid out, scaled to 0–255, rounded, converted)."""

_DRAW_LOCK = threading.Lock()  # FreeType font objects are not documented as thread-safe


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=12)


@dataclass(frozen=True)
class FeatureLayout:
    """Where the panels of a feature-map figure go: one row per sample, one column per
    panel; each column as wide as its scaled map (at least :data:`MIN_PANEL_WIDTH`)."""

    scale: int
    widths: list[int]
    row_height: int
    rows: int

    @property
    def columns(self) -> int:
        return len(self.widths)

    @property
    def width(self) -> int:
        return GAP + sum(w + GAP for w in self.widths)

    @property
    def height(self) -> int:
        return GAP + self.rows * (LABEL_HEIGHT + self.row_height + GAP)

    @property
    def panels(self) -> int:
        return self.rows * self.columns


def _check_pixels(width: int, height: int, what: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise LimitExceeded("max_png_pixels", max_pixels, width * height, what)


def _panel_layout(
    groups: Sequence[tuple[int, int, int]], rows: int, *, max_pixels: int
) -> FeatureLayout:
    """The layout of ``rows`` rows of panels given as groups ``(count, height, width)``: its
    size is worked out and checked from the counts, before a list of one width per panel
    is made (a tensor of 2**25 channels is one group, not 2**25 entries)."""
    tallest = max((h for count, h, _ in groups if count), default=1)
    scale = max(1, min(MAX_SCALE, MIN_SIDE // max(tallest, 1)))
    row_height = max(1, tallest * scale)
    rows = max(1, rows)
    columns = sum(count for count, _, _ in groups)
    width = GAP + sum(count * (max(MIN_PANEL_WIDTH, w * scale) + GAP) for count, _, w in groups)
    height = GAP + rows * (LABEL_HEIGHT + row_height + GAP)
    _check_pixels(width, height, f"a PNG of {rows}×{columns} feature maps", max_pixels)
    widths = [max(MIN_PANEL_WIDTH, w * scale) for count, _, w in groups for _ in range(count)]
    return FeatureLayout(scale=scale, widths=widths, row_height=row_height, rows=rows)


def feature_layout(
    sizes: Sequence[tuple[int, int]], rows: int, *, max_pixels: int
) -> FeatureLayout:
    """The layout of ``rows`` rows of panels of ``sizes`` ``(height, width)``; a 413
    ``png_pixels_limit`` when the figure would be over ``max_pixels`` (the configured
    ``max_png_pixels``)."""
    return _panel_layout([(1, h, w) for h, w in sizes], rows, max_pixels=max_pixels)


def input_panels(channels: int) -> int:
    """How many panels the input takes: one (RGB) for 3 channels, one for 1, else one per
    channel (:func:`input_labels`, counted without being made)."""
    return 1 if channels in (1, 3) else channels


def input_labels(channels: int) -> list[str]:
    """The input's panels: one (RGB) for 3 channels, one for 1, else one per channel."""
    if channels in (1, 3):
        return ["input"]
    return [f"input[{c}]" for c in range(channels)]


def figure_layout(
    input_shape: Sequence[int], output_shape: Sequence[int], *, max_pixels: int
) -> FeatureLayout:
    """The layout of :func:`feature_maps_png` for an input and output of these shapes
    ``[N, C, H, W]``, refused over ``max_pixels`` as :func:`feature_layout`'s."""
    n, c, h, w = input_shape
    _, k, oh, ow = output_shape
    groups = [(input_panels(c), h, w), (k, oh, ow)]
    return _panel_layout(groups, n, max_pixels=max_pixels)


def charge_feature_maps(
    layout: FeatureLayout,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    budget: Budget,
) -> None:
    """Charge drawing :func:`feature_maps_png`: a panel at a time (scaled to 0–255, enlarged,
    pasted and labelled), every map's pixels, and the canvas's PNG encoding."""
    n, c = int(input_shape[0]), int(input_shape[1])
    panels = n * layout.columns
    what = f"drawing {panels:,} feature maps"
    budget.charge_objects(panels, what)
    budget.charge_seconds(panels * PANEL_SECONDS, what)
    maps = math.prod(input_shape) + math.prod(output_shape)
    channels = 3 if c == 3 else 1
    budget.charge_elementwise(
        maps * layout.scale**2 * MAP_UNITS + layout.width * layout.height * channels * CANVAS_UNITS,
        what,
    )


def to_uint8(values: torch.Tensor) -> np.ndarray:
    """``values`` scaled to 0–255 over their finite range (a constant map is black; NaN and
    infinities too), as uint8 of the same shape."""
    x = values.detach().to("cpu", torch.float64)
    finite = torch.isfinite(x)
    if not bool(finite.any()):
        return np.zeros(tuple(x.shape), dtype=np.uint8)
    lo = float(x[finite].min())
    hi = float(x[finite].max())
    scaled = (x - lo) * (255.0 / (hi - lo)) if hi > lo else torch.zeros_like(x)
    scaled = torch.where(finite, scaled, torch.zeros_like(scaled))
    return scaled.round().clamp(0, 255).to(torch.uint8).numpy()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    font = _font()
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _png(canvas: Image.Image) -> bytes:
    if canvas.width == 0 or canvas.height == 0:  # pragma: no cover - every layout has a margin
        raise InvalidInput(
            f"a picture of {canvas.width}×{canvas.height} pixels cannot be drawn as PNG; "
            "ask for JSON instead"
        )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def feature_maps_png(
    inputs: torch.Tensor, outputs: torch.Tensor, labels: Sequence[str], layout: FeatureLayout
) -> bytes:
    """One row per sample: the input (RGB for 3 channels, else each channel) and then every
    output channel, side by side, each scaled to 0–255 and labelled above (``labels``: one
    per output channel)."""
    n, c = int(inputs.shape[0]), int(inputs.shape[1])
    rgb = c == 3
    canvas = Image.new("RGB" if rgb else "L", (layout.width, layout.height), "white")
    with _DRAW_LOCK:
        draw = ImageDraw.Draw(canvas)
        for row in range(n):
            panels: list[tuple[str, np.ndarray]] = []
            if rgb:
                panels.append(("input", to_uint8(inputs[row]).transpose(1, 2, 0)))
            else:
                names = input_labels(c)
                panels.extend((names[ch], to_uint8(inputs[row, ch])) for ch in range(c))
            panels.extend(
                (labels[k], to_uint8(outputs[row, k])) for k in range(int(outputs.shape[1]))
            )
            top = GAP + row * (LABEL_HEIGHT + layout.row_height + GAP)
            left = GAP
            for (label, pixels), width in zip(panels, layout.widths, strict=True):
                picture = Image.fromarray(pixels)
                if layout.scale > 1:
                    picture = picture.resize(
                        (picture.width * layout.scale, picture.height * layout.scale),
                        Image.Resampling.NEAREST,
                    )
                if canvas.mode == "RGB" and picture.mode != "RGB":
                    picture = picture.convert("RGB")
                canvas.paste(picture, (left, top + LABEL_HEIGHT))
                draw.text((left, top + 3), _fit(draw, label, width), fill="black", font=_font())
                left += width + GAP
    return _png(canvas)


@dataclass(frozen=True)
class GridLayout:
    """A ``make_grid`` of ``count`` cells, ``columns`` per row, each cell the image enlarged
    by ``scale`` with a label strip above it."""

    scale: int
    cell_height: int
    cell_width: int
    count: int
    columns: int

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    @property
    def width(self) -> int:
        return self.columns * (self.cell_width + GRID_PADDING) + GRID_PADDING

    @property
    def height(self) -> int:
        return self.rows * (self.cell_height + LABEL_HEIGHT + GRID_PADDING) + GRID_PADDING


def grid_layout(
    count: int,
    height: int,
    width: int,
    columns: int,
    *,
    max_pixels: int,
) -> GridLayout:
    """The layout of :func:`batch_grid_png` for ``count`` images of ``height`` × ``width``;
    a 413 ``png_pixels_limit`` when it would be over ``max_pixels`` (the configured
    ``max_png_pixels``)."""
    scale = max(1, min(MAX_SCALE, GRID_MIN_SIDE // max(height, width, 1)))
    layout = GridLayout(
        scale=scale,
        cell_height=height * scale,
        cell_width=width * scale,
        count=max(1, count),
        columns=max(1, min(columns, count)),
    )
    _check_pixels(layout.width, layout.height, f"a grid of {count} images", max_pixels)
    return layout


def charge_grid(
    layout: GridLayout, channels: int, height: int, width: int, budget: Budget, *, max_pixels: int
) -> None:
    """Charge drawing :func:`batch_grid_png` of pictures of ``channels`` × ``height`` ×
    ``width``: a cell at a time (labelled), the batch scaled to 0–255 in float64, enlarged,
    laid out by ``make_grid`` and encoded. A grid over ``max_pixels`` is refused before it
    is drawn, so no more than that is charged for its canvas."""
    what = f"drawing a grid of {layout.count:,} pictures"
    budget.charge_objects(layout.count, what)
    budget.charge_seconds(layout.count * PANEL_SECONDS, what)
    drawn = 3 if channels == 3 else 1
    batch = layout.count * channels * height * width
    enlarged = layout.count * drawn * layout.cell_height * layout.cell_width
    canvas = min(layout.width * layout.height, max_pixels) * 3
    budget.charge_elementwise(
        batch * MAP_UNITS + enlarged * GRID_UNITS + canvas * (GRID_UNITS + CANVAS_UNITS), what
    )


def batch_grid_png(batch: torch.Tensor, labels: Sequence[str], layout: GridLayout) -> bytes:
    """``torchvision.utils.make_grid`` of ``batch`` ``[B, C, H, W]`` (scaled to 0–1 over the
    whole batch; channels other than 1 or 3 averaged into one), each cell labelled above."""
    from torchvision.utils import make_grid  # noqa: PLC0415 (torchvision imports in seconds)

    x = batch.detach().to("cpu", torch.float32)
    if x.shape[1] not in (1, 3):
        x = x.mean(dim=1, keepdim=True)
    x = torch.from_numpy(to_uint8(x)).to(torch.float32) / 255.0
    if layout.scale > 1:
        x = x.repeat_interleave(layout.scale, dim=2).repeat_interleave(layout.scale, dim=3)
    x = torch.nn.functional.pad(x, (0, 0, LABEL_HEIGHT, 0), value=1.0)
    grid = make_grid(x, nrow=layout.columns, padding=GRID_PADDING, pad_value=1.0)
    if x.shape[0] == 1:
        # make_grid returns a single picture unpadded: pad it as the layout says, so that
        # the canvas is never narrower than the padding (a 0×0 picture is a 4×24 canvas;
        # PNG has no empty images).
        pad = GRID_PADDING
        grid = torch.nn.functional.pad(grid, (pad, pad, pad, pad), value=1.0)
    pixels: Any = (grid * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    canvas = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    with _DRAW_LOCK:
        draw = ImageDraw.Draw(canvas)
        for index, label in enumerate(labels[: layout.count]):
            row, column = divmod(index, layout.columns)
            left = GRID_PADDING + column * (layout.cell_width + GRID_PADDING)
            top = GRID_PADDING + row * (layout.cell_height + LABEL_HEIGHT + GRID_PADDING)
            text = _fit(draw, label, layout.cell_width)
            draw.text((left + 1, top + 3), text, fill="black", font=_font())
    return _png(canvas)
