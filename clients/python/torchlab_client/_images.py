"""Pictures in and out: what an ``image`` argument may be, and PNG answers.

An image argument may be a path, the bytes of a PNG or JPEG file, a binary file object, a
numpy array (``[H, W]`` or ``[H, W, C]`` with C = 1, 3 or 4, uint8 or uint16), a PIL image,
a torch tensor laid out like the array, or a :class:`PNGImage` from an earlier answer.
Arrays are written as PNG by a small encoder here, so neither Pillow nor torch is needed.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np

from torchlab_client._codec import NDArray
from torchlab_client._exceptions import ProtocolError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"

ImageInput: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | NDArray | PNGImage | Any"
)
"""A path, file bytes, a binary file, a numpy array, a PIL image, a torch tensor or a
:class:`PNGImage` (``Any`` stands for the optional libraries' types)."""

FileInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]"
"""A path, the file's bytes, or a binary file object."""

Upload = tuple[str, bytes, str]
"""(file name, content, media type) of one uploaded file."""


@dataclass(frozen=True, repr=False)
class PNGImage:
    """A PNG answer (``format="png"``): the bytes, the answer's headers, and conveniences.

    ``to_pil()`` needs Pillow; everything else works without it. In Jupyter it shows itself.
    """

    data: bytes
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.data.startswith(PNG_SIGNATURE) or len(self.data) < 24:
            raise ProtocolError("the answer is not a PNG image")

    @property
    def width(self) -> int:
        """Width in pixels (read from the PNG header)."""
        return int(struct.unpack(">I", self.data[16:20])[0])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(struct.unpack(">I", self.data[20:24])[0])

    def __repr__(self) -> str:
        return f"PNGImage(width={self.width}, height={self.height}, bytes={len(self.data):,})"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG file (parent folders are created) and return its path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.data)
        return target

    def to_pil(self) -> Any:
        """The picture as a ``PIL.Image.Image`` (needs Pillow)."""
        try:
            from PIL import Image  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ImportError(
                "PNGImage.to_pil() needs Pillow: pip install pillow (or use .data / .save())"
            ) from exc
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def _repr_png_(self) -> bytes:
        return self.data


def encode_png(array: NDArray) -> bytes:
    """PNG bytes of an image array: ``[H, W]`` (gray), ``[H, W, 1|3|4]``; uint8 or uint16
    (bool is taken as 0/255). Unfiltered scanlines, zlib level 6: correct, not the smallest."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        color_type = 0
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        color_type = 2 if array.shape[2] == 3 else 6
    else:
        raise ValueError(
            f"an image array is [H, W] or [H, W, C] with C = 1, 3 or 4; got shape "
            f"{list(array.shape)} (send a tensor of another layout as `input=` instead)"
        )
    if array.dtype == np.uint8:
        depth = 8
    elif array.dtype == np.uint16:
        depth = 16
        array = array.astype(">u2")
    else:
        raise ValueError(
            f"an image array must be uint8 or uint16, got {array.dtype} (send float data as "
            "`input=`, a tensor, or convert it: np.clip(a, 0, 255).astype(np.uint8))"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ValueError("an image needs at least one pixel")
    rows = np.ascontiguousarray(array).reshape(height, -1).view(np.uint8)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines, 6))
        + chunk(b"IEND", b"")
    )


_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/webp": "webp",
}


def _media_type(content: bytes) -> str:
    if content.startswith(PNG_SIGNATURE):
        return "image/png"
    if content.startswith(_JPEG_SIGNATURE):
        return "image/jpeg"
    if content[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if content[:2] == b"BM":
        return "image/bmp"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def read_file(value: FileInput, default_name: str) -> tuple[str, bytes]:
    """(file name, bytes) of a path, bytes or binary file object."""
    if isinstance(value, bytes | bytearray | memoryview):
        return default_name, bytes(value)
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        return path.name, path.read_bytes()
    read = getattr(value, "read", None)
    if callable(read):
        content = read()
        if not isinstance(content, bytes):
            raise TypeError("a file object must be opened in binary mode ('rb')")
        name = getattr(value, "name", None)
        return (Path(name).name if isinstance(name, str) else default_name), content
    raise TypeError(f"expected a path, bytes or a binary file, got {type(value).__name__}")


def image_upload(value: ImageInput, index: int = 0) -> Upload:
    """One image argument as an uploaded file."""
    stem = "image" if index == 0 else f"image{index}"
    if isinstance(value, PNGImage):
        return f"{stem}.png", value.data, "image/png"
    if isinstance(value, np.ndarray):
        return f"{stem}.png", encode_png(value), "image/png"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return f"{stem}.png", encode_png(value.detach().cpu().numpy()), "image/png"
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(value, pil.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return f"{stem}.png", buffer.getvalue(), "image/png"
    name, content = read_file(value, "")
    media_type = _media_type(content)
    if media_type == "application/octet-stream":
        raise ValueError(f"{name or 'the data'}: not a PNG, JPEG, GIF, BMP or WebP file")
    return name or f"{stem}.{_EXTENSIONS[media_type]}", content, media_type


def archive_upload(value: FileInput) -> Upload:
    """A zip in ImageFolder layout: a zip file (path, bytes, file object) or a folder,
    zipped here (``class_name/file.png`` inside)."""
    if isinstance(value, str | os.PathLike) and Path(value).is_dir():
        root = Path(value)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root).as_posix())
        return f"{root.name or 'images'}.zip", buffer.getvalue(), "application/zip"
    name, content = read_file(value, "images.zip")
    if not content.startswith(b"PK"):
        raise ValueError(f"{name}: not a zip archive")
    return name, content, "application/zip"


def csv_upload(value: FileInput) -> Upload:
    """A CSV file (path, bytes or binary file object)."""
    name, content = read_file(value, "data.csv")
    return name, content, "text/csv"
