"""Pictures in, tensors out, safely: Pillow restricted to a few formats, sizes checked from
the header before a pixel is decoded.

Three guards stand between an upload and memory:

* Pillow only tries the parsers of :data:`ALLOWED_FORMATS` (``Image.open(formats=...)``);
  anything else is a 415, never handed to a less-used parser.
* The header's width × height is checked against the configured ``max_image_pixels`` and
  the decoded tensor's elements against the request's element limit, both before
  ``load()``: a PNG of a few kilobytes that claims 30000 × 30000 pixels is a 413 in
  microseconds. Pillow's own guard, ``Image.MAX_IMAGE_PIXELS``, is a second line: it starts
  at the default limit and follows any larger configured one.
* Truncated or corrupt data of an allowed format is a 422 (``LOAD_TRUNCATED_IMAGES`` stays
  off, so Pillow never pads a short file with grey).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import threading
import zlib

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from schemas.vision import ImageMode
from service.codec import check_elements
from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded, UnsupportedMediaType

__all__ = [
    "ALLOWED_FORMATS",
    "FORMAT_NAMES",
    "IMAGE_EXTENSIONS",
    "ImageMode",
    "decode_base64",
    "decode_image",
    "image_tensor",
    "load_pixels",
    "open_image",
    "pixels_to_tensor",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
"""The formats Pillow may parse; its other plugins are never tried on a request's bytes."""
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP or TIFF"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File name endings taken for pictures (in archives), lower case."""

_DEFAULT_MAX_PIXELS: int = Limits.model_fields["max_image_pixels"].default
"""``max_image_pixels``'s default: where Pillow's guard starts."""

# Pillow's own decompression-bomb guard (a process-wide setting of the library): a warning
# above this many pixels and an error above twice as many, in Image.open itself.
Image.MAX_IMAGE_PIXELS = _DEFAULT_MAX_PIXELS
_PILLOW_GUARD_LOCK = threading.Lock()

_CHANNELS: dict[str, int] = {"L": 1, "RGB": 3}
_DATA_URL = re.compile(r"data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)
DATA_URL_HEAD = 1024
"""A ``data:...;base64,`` prefix (a media type and its parameters) is looked for in this many
first characters only. Over the whole text, ``data:`` and then megabytes of base64 with no
``;base64,`` made the pattern try every length of the media type: 0.7 s for 16 MB, holding
the interpreter lock."""
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# What Pillow's decoders raise on truncated or corrupt data of an identified format.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


def decode_base64(text: str, where: str) -> bytes:
    """The bytes of base64 text (standard alphabet; a ``data:...;base64,`` prefix and line
    breaks are allowed). Anything else is a 422 ``invalid_base64``."""
    prefix = _DATA_URL.match(text, 0, DATA_URL_HEAD)
    body = text[prefix.end() :] if prefix else text
    if "\n" in body or "\r" in body:
        body = body.replace("\n", "").replace("\r", "")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            f"{where}: not valid base64 ({exc})",
            code=ErrorCode.INVALID_BASE64,
            details={"field": where},
        ) from exc


def _follow_in_pillow(max_pixels: int) -> None:
    """Raise Pillow's guard to ``max_pixels`` when a configuration allows more than it does:
    being process-wide, it only ever grows, so it never refuses what one app allows."""
    guard = Image.MAX_IMAGE_PIXELS
    if guard is None or guard >= max_pixels:
        return
    with _PILLOW_GUARD_LOCK:
        guard = Image.MAX_IMAGE_PIXELS
        if guard is not None and guard < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _bomb_pixels(exc: Image.DecompressionBombError) -> int:
    """The pixels Pillow's guard refused (from its message), else just over what it allows."""
    found = _BOMB_PIXELS.search(str(exc))
    return int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1


def open_image(data: bytes, where: str, *, max_pixels: int) -> Image.Image:
    """The picture in ``data`` with its header read and checked, not yet decoded.

    415 ``unsupported_image`` unless it is one of :data:`ALLOWED_FORMATS`; 413
    ``image_pixels_limit`` when width × height is over ``max_pixels`` (the configured
    ``max_image_pixels``).
    """
    _follow_in_pillow(max_pixels)
    if not data:
        raise UnsupportedMediaType(
            f"{where}: the file is empty, not a {FORMAT_NAMES} image",
            code=ErrorCode.UNSUPPORTED_IMAGE,
            details={"allowed": list(ALLOWED_FORMATS)},
        )
    _check_tiff_pieces(data, where)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise LimitExceeded(
            "max_image_pixels", max_pixels, _bomb_pixels(exc), f"{where}: the image"
        ) from exc
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        raise UnsupportedMediaType(
            f"{where}: not a {FORMAT_NAMES} image (Pillow cannot identify it as one)",
            code=ErrorCode.UNSUPPORTED_IMAGE,
            details={"allowed": list(ALLOWED_FORMATS)},
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise LimitExceeded(
            "max_image_pixels", max_pixels, width * height, f"{where}: a {width}×{height} image"
        )
    if image.format in ("JPEG", "MPO"):  # Pillow opens a JPEG with an MP header as MPO
        _check_scans(data, where, image)
    if image.format == "BMP" and image.info.get("compression") in _BMP_RLE:
        _check_rle(where, image)
    return image


MAX_RLE_PIXELS = 1 << 21
"""Most pixels of a run-length-encoded BMP (RLE8, RLE4): Pillow decodes those in Python, 0.2
µs a pixel (a 23 KB RLE4 file of 5792×5792 took 6 s); a BMP of more is stored without it."""
_BMP_RLE = {1: "RLE8", 2: "RLE4"}


def _check_rle(where: str, image: Image.Image) -> None:
    """422 ``invalid_image`` for a run-length-encoded BMP of more than :data:`MAX_RLE_PIXELS`."""
    width, height = image.size
    if width * height > MAX_RLE_PIXELS:
        compression = _BMP_RLE[image.info["compression"]]
        image.close()
        raise InvalidInput(
            f"{where}: a {width}×{height} BMP in {compression}, at most {MAX_RLE_PIXELS:,} "
            "pixels of a run-length-encoded BMP are read (it is decoded in Python); save it "
            "uncompressed, or as a PNG",
            code=ErrorCode.INVALID_IMAGE,
            details={
                "format": "BMP",
                "compression": compression,
                "pixels": width * height,
                "allowed": MAX_RLE_PIXELS,
            },
        )


MAX_JPEG_SCANS = 256
"""Most scans a JPEG may hold. A progressive JPEG's decoder makes a pass over the whole
picture for every scan: a 767 KB file of 5792×5792 pixels and 12,000 scans took 49 s to
decode. A baseline JPEG has one scan per component (or one), a progressive one about ten."""


def _check_scans(data: bytes, where: str, image: Image.Image) -> None:
    """422 ``invalid_image`` for a JPEG of more than :data:`MAX_JPEG_SCANS` scans, counted by
    their start markers (``FF DA``: coded data never holds that pair, it stuffs a 0 after
    every ``FF``)."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        image.close()
        raise InvalidInput(
            f"{where}: the JPEG holds {scans:,} scans, at most {MAX_JPEG_SCANS} are read (its "
            "decoder passes over the whole picture for each); save it as a baseline JPEG",
            code=ErrorCode.INVALID_IMAGE,
            details={"format": "JPEG", "scans": scans, "allowed": MAX_JPEG_SCANS},
        )


MAX_TIFF_PIECES = 1 << 16
"""Most strips or tiles a TIFF's first picture may be stored in. Pillow makes an object for
each while it opens the file, and reads each from Python: a 16 MB TIFF of a 1×2 picture in 4
million strips took 52 s and 1 GB to open. A picture at the pixel limit stored in strips of
one row has 5,792 of them; in tiles of 64×64, 8,100."""
_TIFF_PIECE_TAGS = frozenset({273, 324})  # StripOffsets, TileOffsets
MAX_TIFF_TAGS = 4096
"""Most entries a TIFF's first directory may hold (the format defines about a hundred tags)."""


def _tiff_pieces(data: bytes) -> int:
    """The strips or tiles the first directory of a TIFF (classic or BigTIFF) counts, or its
    number of entries when that is over :data:`MAX_TIFF_TAGS`; 0 for other data, or a
    directory that cannot be read (Pillow refuses the file then)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return 0
    try:
        (magic,) = struct.unpack_from(order + "H", data, 2)
        if magic == 42:
            (at,) = struct.unpack_from(order + "I", data, 4)
            (count,) = struct.unpack_from(order + "H", data, at)
            entry, layout, first = 12, order + "HHI", at + 2
        elif magic == 43:
            (at,) = struct.unpack_from(order + "Q", data, 8)
            (count,) = struct.unpack_from(order + "Q", data, at)
            entry, layout, first = 20, order + "HHQ", at + 8
        else:
            return 0
        if count > MAX_TIFF_TAGS:
            return int(count)  # refused as well: Pillow reads every entry from Python
        pieces = 0
        for index in range(min(count, (len(data) - first) // entry)):
            tag, _, values = struct.unpack_from(layout, data, first + index * entry)
            if tag in _TIFF_PIECE_TAGS:
                pieces = max(pieces, values)
        return pieces
    except struct.error:
        return 0


def _check_tiff_pieces(data: bytes, where: str) -> None:
    """422 ``invalid_image`` for a TIFF stored in more than :data:`MAX_TIFF_PIECES` strips or
    tiles, read from its directory before Pillow opens it."""
    pieces = _tiff_pieces(data)
    if pieces > MAX_TIFF_PIECES:
        raise InvalidInput(
            f"{where}: the TIFF's directory counts {pieces:,} strips, tiles or entries, at "
            f"most {MAX_TIFF_PIECES:,} are read; save it in fewer, larger strips",
            code=ErrorCode.INVALID_IMAGE,
            details={"format": "TIFF", "pieces": pieces, "allowed": MAX_TIFF_PIECES},
        )


_SIXTEEN_BIT_GRAY = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _sixteen_bit_gray(image: Image.Image) -> bool:
    """Whether ``image`` holds 16-bit gray values: a 16-bit mode, or a PNG read as 32-bit
    ``I`` (PNG's deepest gray is 16 bits)."""
    return image.mode in _SIXTEEN_BIT_GRAY or (image.mode == "I" and image.format == "PNG")


def _high_bytes(image: Image.Image, mode: ImageMode) -> np.ndarray:
    """A 16-bit gray picture as uint8 by the high byte of each value, as Pillow reads a
    16-bit RGB PNG (``value >> 8``). Pillow's ``convert`` would clip each value at 255
    instead: 256 and 65535 both became 255, and a 16-bit gray picture's values were not
    those of the same picture in RGB."""
    values = np.asarray(image)
    gray = np.right_shift(values, 8).clip(0, 255).astype(np.uint8)
    return gray if mode == "L" else np.repeat(gray[..., None], _CHANNELS[mode], axis=2)


def load_pixels(image: Image.Image, mode: ImageMode, where: str, *, max_pixels: int) -> np.ndarray:
    """The decoded picture as uint8, ``[H, W]`` for ``L`` or ``[H, W, 3]`` for ``RGB``
    (Pillow's ``convert``, but 16-bit gray by each value's high byte; the first frame of an
    animation). Corrupt or truncated data is
    a 422 ``invalid_image``; a frame over ``max_pixels`` a 413 ``image_pixels_limit``."""
    try:
        image.load()
        if _sixteen_bit_gray(image):
            return _high_bytes(image, mode)
        converted = image if image.mode == mode else image.convert(mode)
        return np.array(converted, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # a later frame or tile that grew
        raise LimitExceeded(
            "max_image_pixels", max_pixels, _bomb_pixels(exc), f"{where}: the image"
        ) from exc
    except _DECODE_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(
            f"{where}: the {image.format or 'image'} data is truncated or corrupt: {message}",
            code=ErrorCode.INVALID_IMAGE,
            details={"format": image.format},
        ) from exc
    finally:
        image.close()


def decode_image(
    data: bytes,
    mode: ImageMode,
    where: str,
    *,
    max_elements: int,
    max_pixels: int,
) -> np.ndarray:
    """``data`` decoded as uint8 pixels (see :func:`load_pixels`), after its header passed
    the pixel limit (``max_pixels``, the configured ``max_image_pixels``) and its decoded
    size the element limit (413 ``elements_limit``)."""
    image = open_image(data, where, max_pixels=max_pixels)
    width, height = image.size
    try:
        check_elements(_CHANNELS[mode] * width * height, max_elements, f"{where} ({mode})")
    except LimitExceeded:
        image.close()
        raise
    return load_pixels(image, mode, where, max_pixels=max_pixels)


def pixels_to_tensor(pixels: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[H, W]`` or ``[H, W, C]`` pixels as a ``[C, H, W]`` tensor of ``dtype`` (values kept:
    0–255)."""
    tensor = torch.from_numpy(pixels)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.to(dtype).contiguous()


def image_tensor(
    data: bytes, mode: ImageMode, where: str, *, max_elements: int, max_pixels: int
) -> torch.Tensor:
    """A picture as the tutorial feeds it to a convolution: ``[1, C, H, W]`` float32 in
    [0, 255], C = 1 for ``L`` and 3 for ``RGB``; limits as :func:`decode_image`'s."""
    pixels = decode_image(data, mode, where, max_elements=max_elements, max_pixels=max_pixels)
    return pixels_to_tensor(pixels).unsqueeze(0)
