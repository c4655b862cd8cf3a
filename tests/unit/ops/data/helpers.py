"""What the image-data tests share: pictures as PNG bytes, zips built in memory, limits."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

from service.calibration import Throughput
from service.config import Limits
from service.limits import Budget

BIG = 1 << 30
THROUGHPUT = Throughput("cpu", {"float32": 1e11, "float16": 1e9}, 1e9)
"""Fixed rates, so that predicted times are the same on every machine."""


def limits(**values: int) -> Limits:
    """The default limits with ``values`` in place, elements practically unbounded."""
    return Limits(**{"max_elements": BIG, "max_total_elements": BIG, **values})


def budget(**values: int) -> Budget:
    """A budget of :func:`limits`."""
    return Budget.from_limits(limits(**values))


def timed_budget(**values: float) -> Budget:
    """A budget of :func:`limits` that predicts time at :data:`THROUGHPUT`'s rates."""
    return Budget.from_limits(limits(**values), THROUGHPUT)  # type: ignore[arg-type]


def png(pixels: np.ndarray) -> bytes:
    """``pixels`` ([H, W] gray or [H, W, 3] RGB, uint8) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint8 pixels, [H, W, C] (or [H, W] for one channel)."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def make_zip(entries: dict[str, bytes]) -> bytes:
    """A deflated zip of ``entries`` (name → content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_of(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    """A zip of one entry described by ``info`` (its name and attributes as given)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, data)
    return buffer.getvalue()
