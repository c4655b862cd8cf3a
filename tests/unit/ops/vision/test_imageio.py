"""Safe image decoding: allowed formats, limits checked from the header, broken data."""

from __future__ import annotations

import base64
import io
import math
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded, UnsupportedMediaType
from service.ops.vision import imageio
from service.ops.vision.imageio import (
    ALLOWED_FORMATS,
    DATA_URL_HEAD,
    MAX_JPEG_SCANS,
    MAX_RLE_PIXELS,
    MAX_TIFF_PIECES,
    decode_base64,
    decode_image,
    image_tensor,
    open_image,
    pixels_to_tensor,
)

MAX_IMAGE_PIXELS = Limits.model_fields["max_image_pixels"].default
"""The configured pixel limit of a default configuration."""
PHOTO = load_sample_images().images[1][:96, :128].copy()  # flower.jpg, RGB uint8


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width × height (1-bit gray) with a few rows of data: kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(bytes((width + 7) // 8 + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


LOSSLESS = ["PNG", "BMP", "TIFF", "WEBP"]


@pytest.mark.parametrize("fmt", LOSSLESS)
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_lossless_formats_decode_to_pillows_pixels(fmt: str, mode: str) -> None:
    source = Image.fromarray(PHOTO).convert(mode)
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encoded(source, fmt, **options)
    pixels = decode_image(
        data,
        mode,  # type: ignore[arg-type]
        "image",
        max_elements=1 << 20,
        max_pixels=MAX_IMAGE_PIXELS,
    )
    np.testing.assert_array_equal(pixels, np.asarray(source))


@pytest.mark.parametrize("fmt", ["JPEG", "GIF"])
def test_lossy_formats_decode_as_pillow_decodes_them(fmt: str) -> None:
    data = encoded(Image.fromarray(PHOTO), fmt)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    tensor = image_tensor(data, "L", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS)
    assert tensor.shape == (1, 1, *PHOTO.shape[:2])
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0, 0], torch.from_numpy(expected), rtol=0, atol=0)


def test_grayscale_is_pillows_luma_in_0_255() -> None:
    data = encoded(Image.fromarray(PHOTO), "PNG")
    tensor = image_tensor(data, "L", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS)
    luma = np.asarray(Image.fromarray(PHOTO).convert("L"), dtype=np.float32)
    torch.testing.assert_close(tensor[0, 0], torch.from_numpy(luma), rtol=0, atol=0)
    rgb = image_tensor(data, "RGB", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS)
    assert rgb.shape == (1, 3, *PHOTO.shape[:2])
    torch.testing.assert_close(rgb[0].permute(1, 2, 0), torch.from_numpy(PHOTO).float())


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "I;16", "1", "CMYK"])
def test_other_pixel_modes_are_converted(mode: str) -> None:
    source = Image.fromarray(PHOTO).convert("RGBA" if mode == "P" else "RGB")
    if mode == "I;16":
        source = Image.fromarray(np.asarray(source.convert("L"), dtype=np.uint16) * 200)
    elif mode != "P":
        source = source.convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    data = encoded(source.convert("P") if mode == "P" else source, fmt)
    for target in ("L", "RGB"):
        pixels = decode_image(
            data,
            target,  # type: ignore[arg-type]
            "image",
            max_elements=1 << 20,
            max_pixels=MAX_IMAGE_PIXELS,
        )
        assert pixels.shape[:2] == PHOTO.shape[:2]
        assert pixels.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("order", ["<u2", ">u2"])
def test_sixteen_bit_gray_keeps_each_values_high_byte_as_16_bit_rgb_does(
    fmt: str, order: str
) -> None:
    # Pillow's convert clips 16-bit gray at 255 (256 and 65535 alike), while it reads a
    # 16-bit RGB PNG by the high bytes: the same picture gave other values in gray.
    values = np.array([[0, 255, 256, 1000], [30000, 65535, 128, 12850]], dtype=order)
    mode = "I;16" if order == "<u2" else "I;16B"
    image = Image.frombuffer(mode, (4, 2), values.tobytes(), "raw", mode, 0, 1)
    data = encoded(image, fmt)
    expected = (values.astype(np.int64) >> 8).astype(np.uint8)
    decode = {"max_elements": 1 << 20, "max_pixels": MAX_IMAGE_PIXELS}
    np.testing.assert_array_equal(decode_image(data, "L", "image", **decode), expected)
    rgb = decode_image(data, "RGB", "image", **decode)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
    # 16-bit RGB, as Pillow reads it, agrees: its values' high bytes.
    wide = np.repeat(values.astype("<u2")[..., None], 3, axis=2)
    header = struct.pack(">IIBBBBB", 4, 2, 16, 2, 0, 0, 0)
    rows = b"".join(b"\0" + wide[y].astype(">u2").tobytes() for y in range(2))
    png = _png_chunks([(b"IHDR", header), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])
    np.testing.assert_array_equal(decode_image(png, "RGB", "image", **decode), rgb)


def _png_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, payload in chunks:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        out += struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
    return out


def test_base64_with_and_without_a_data_url() -> None:
    data = encoded(Image.fromarray(PHOTO), "PNG")
    text = base64.b64encode(data).decode()
    assert decode_base64(text, "image") == data
    assert decode_base64("data:image/png;base64," + text, "image") == data
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_base64(wrapped, "image") == data
    with pytest.raises(InvalidInput) as caught:
        decode_base64("not base64!", "image")
    assert caught.value.code == "invalid_base64"


def test_a_data_url_prefix_is_looked_for_at_the_start_only() -> None:
    # Matched over the whole text, "data:" then megabytes of base64 with no ";base64," made
    # the pattern try every length of the media type (0.7 s for 16 MB, lock held).
    data = encoded(Image.fromarray(PHOTO), "PNG")
    text = base64.b64encode(data).decode()
    longest = "data:" + "a" * (DATA_URL_HEAD - len("data:;base64,")) + ";base64,"
    assert decode_base64(longest + text, "image") == data
    for beyond in ("data:" + "a" * DATA_URL_HEAD + ";base64," + text, "data:" + text * 40):
        with pytest.raises(InvalidInput) as caught:
            decode_base64(beyond, "image")
        assert caught.value.code == "invalid_base64"


def test_a_huge_png_of_a_few_kilobytes_is_refused_from_its_header() -> None:
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 64 * 1024
    start = time.process_time()
    with pytest.raises(LimitExceeded) as caught:
        decode_image(bomb, "L", "image", max_elements=1 << 40, max_pixels=MAX_IMAGE_PIXELS)
    assert time.process_time() - start < 0.5
    assert caught.value.status_code == 413
    assert caught.value.code == "image_pixels_limit"
    assert caught.value.details["requested"] == 30000 * 30000
    assert caught.value.details["allowed"] == MAX_IMAGE_PIXELS


def test_our_pixel_limit_and_the_element_limit_come_before_decoding() -> None:
    claim = png_header_only(9000, 8000)  # over our limit, under Pillow's error threshold
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(LimitExceeded) as caught:
        open_image(claim, "image", max_pixels=MAX_IMAGE_PIXELS)
    assert caught.value.details["requested"] == 72_000_000
    small = png_header_only(300, 200)
    with pytest.raises(LimitExceeded) as caught:
        open_image(small, "image", max_pixels=1000)
    assert caught.value.code == "image_pixels_limit"
    with pytest.raises(LimitExceeded) as caught:
        decode_image(
            small, "RGB", "image", max_elements=300 * 200 * 3 - 1, max_pixels=MAX_IMAGE_PIXELS
        )
    assert caught.value.code == "elements_limit"


@pytest.mark.parametrize("max_pixels", [1000, 300 * 200 - 1])
def test_the_configured_pixel_limit_is_the_one_refused_and_reported(max_pixels: int) -> None:
    small = png_header_only(300, 200)
    with pytest.raises(LimitExceeded) as caught:
        decode_image(small, "L", "image", max_elements=1 << 20, max_pixels=max_pixels)
    assert caught.value.code == "image_pixels_limit"
    assert caught.value.details["limit"] == "max_image_pixels"
    assert caught.value.details["allowed"] == max_pixels
    assert caught.value.details["requested"] == 300 * 200
    pixels = decode_image(small, "L", "image", max_elements=1 << 20, max_pixels=300 * 200)
    assert pixels.shape == (200, 300)


def test_a_configured_limit_above_pillows_guard_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow's guard is process-wide: put it back after the test raised it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    side = math.isqrt(2 * MAX_IMAGE_PIXELS) + 1  # past twice Pillow's default guard
    claim = png_header_only(side, side)
    with pytest.raises(LimitExceeded) as caught:
        decode_image(claim, "L", "image", max_elements=1 << 20, max_pixels=side * side)
    # The header passed the configured pixel limit; the element limit refused it.
    assert caught.value.code == "elements_limit"
    assert caught.value.details["requested"] == side * side


def test_a_truncated_jpeg_is_a_422() -> None:
    data = encoded(Image.fromarray(load_sample_images().images[0]), "JPEG")
    assert len(data) > 20_000  # cut in the middle of the scan, past the header
    with pytest.raises(InvalidInput) as caught:
        decode_image(
            data[: len(data) // 2], "L", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS
        )
    assert caught.value.code == "invalid_image"
    assert caught.value.status_code == 422


def repeated_scans(image: Image.Image, copies: int) -> bytes:
    """A progressive JPEG of ``image`` whose first AC scan (its start-of-scan segment and
    entropy-coded data) is repeated ``copies`` times before the end marker: every copy is
    one more pass of the decoder over the whole picture."""
    data = encoded(image, "JPEG", progressive=True, quality=90)
    at = 2
    while True:  # the segments, to the first scan of AC coefficients (Ss > 0, Ah = 0)
        marker = data[at + 1]
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        end = at + 2 + length
        if marker == 0xDA:
            components = data[at + 4]
            first, _, approximation = data[at + 5 + 2 * components : at + 8 + 2 * components]
            while True:  # to the next marker: FF followed by neither 00 nor a restart
                end = data.index(b"\xff", end)
                if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                    break
                end += 2
            if first > 0 and approximation >> 4 == 0:
                scan = data[at:end]
                break
        at = end
    return data[:-2] + scan * copies + data[-2:]


def test_a_jpeg_of_many_scans_is_refused_before_decoding() -> None:
    """12,000 scans of a 767 KB file took 49 s to decode; past MAX_JPEG_SCANS, a 422 at once."""
    picture = Image.new("L", (512, 512), 128)
    many = repeated_scans(picture, MAX_JPEG_SCANS)
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        decode_image(many, "L", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS)
    assert time.perf_counter() - start < 0.5
    assert caught.value.code == "invalid_image"
    assert caught.value.details == {
        "format": "JPEG",
        "scans": many.count(b"\xff\xda"),
        "allowed": MAX_JPEG_SCANS,
    }
    # A progressive JPEG as encoders write one (about ten scans) decodes as Pillow decodes it.
    progressive = encoded(Image.fromarray(PHOTO), "JPEG", progressive=True)
    pixels = decode_image(
        progressive, "RGB", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS
    )
    assert np.array_equal(pixels, np.array(Image.open(io.BytesIO(progressive))))


def test_the_scans_of_a_jpeg_pillow_opens_as_mpo_are_counted_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A JPEG with a Multi-Picture header (two pictures here, so two scans or more) is
    opened by Pillow as MPO: its scans are counted as a JPEG's are."""
    picture = Image.fromarray(PHOTO)
    buffer = io.BytesIO()
    picture.save(buffer, "MPO", save_all=True, append_images=[picture])
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    monkeypatch.setattr(imageio, "MAX_JPEG_SCANS", 1)
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, "RGB", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS)
    assert caught.value.details["scans"] >= 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is not a picture",
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        encoded(Image.fromarray(PHOTO), "PPM"),  # a format Pillow reads but we do not allow
        encoded(Image.fromarray(PHOTO).resize((32, 32)), "ICO"),
        encoded(Image.fromarray(PHOTO), "PCX"),
    ],
    ids=["empty", "text", "signature-only", "ppm", "ico", "pcx"],
)
def test_anything_but_an_allowed_picture_is_a_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_image(data, "L", "image", max_elements=1 << 20, max_pixels=MAX_IMAGE_PIXELS)
    assert caught.value.code == "unsupported_image"
    assert caught.value.details["allowed"] == list(ALLOWED_FORMATS)


def test_pixels_to_tensor_is_channels_first() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert pixels_to_tensor(gray).shape == (1, 3, 4)
    color = np.zeros((3, 4, 3), dtype=np.uint8)
    color[..., 2] = 7
    tensor = pixels_to_tensor(color, torch.uint8)
    assert tensor.shape == (3, 3, 4)
    assert tensor.dtype == torch.uint8
    assert bool((tensor[2] == 7).all())


def many_strips(strips: int, order: str = "<") -> bytes:
    """A TIFF of a 1×2 grey picture whose directory lists ``strips`` strips (each the same
    byte): Pillow makes an object for each as it opens the file."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    data_at = 8 + 2 + 9 * 12 + 4
    offsets_at = data_at + 4

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        if kind == 3 and count == 1:  # a SHORT sits in the first two bytes of the value
            return struct.pack(order + "HHIHH", tag, kind, count, value, 0)
        return struct.pack(order + "HHII", tag, kind, count, value)

    entries = [
        entry(256, 4, 1, 1),
        entry(257, 4, 1, 2),
        entry(258, 3, 1, 8),
        entry(259, 3, 1, 1),
        entry(262, 3, 1, 1),
        entry(273, 4, strips, offsets_at if strips > 1 else data_at),
        entry(277, 3, 1, 1),
        entry(278, 4, 1, 1 if strips > 1 else 2),
        entry(279, 4, strips, 1 if strips > 1 else 2),
    ]
    directory = struct.pack(order + "H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    head = magic + struct.pack(order + "I", 8) + directory + b"\x80\x40\0\0"
    return head + struct.pack(f"{order}{strips}I", *[data_at] * strips) if strips > 1 else head


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_tiff_of_too_many_strips_is_refused_before_pillow_opens_it(order: str) -> None:
    """A 16 MB TIFF of a 1×2 picture in 4 million strips took Pillow 52 s and 1 GB to open."""
    fine = open_image(many_strips(2, order), "image", max_pixels=100)
    assert fine.size == (1, 2)
    assert np.array(fine).ravel().tolist() == [128, 128]  # both rows from the one strip byte
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        open_image(many_strips(MAX_TIFF_PIECES + 1, order), "image", max_pixels=100)
    assert time.perf_counter() - start < 0.1
    assert caught.value.code == ErrorCode.INVALID_IMAGE
    assert caught.value.details == {
        "format": "TIFF",
        "pieces": MAX_TIFF_PIECES + 1,
        "allowed": MAX_TIFF_PIECES,
    }
    at_limit = open_image(many_strips(MAX_TIFF_PIECES, order), "image", max_pixels=100)
    assert at_limit.size == (1, 2)


def rle4_bmp(width: int, height: int) -> bytes:
    """A 4-bit run-length-encoded BMP of grey 17: per row a run of one pixel, then its end
    (Pillow fills the rest of the row with 0)."""
    palette = b"".join(struct.pack("<BBBB", i * 17, i * 17, i * 17, 0) for i in range(16))
    rows = b"\x01\x11\x00\x00" * height + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 4, 2, len(rows), 2835, 2835, 16, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def test_a_large_run_length_encoded_bmp_is_refused_before_decoding() -> None:
    """Pillow decodes RLE BMPs in Python: 23 KB of 5792×5792 took 6 s a picture."""
    small = open_image(rle4_bmp(64, 32), "image", max_pixels=1 << 25)
    pixels = np.array(small.convert("L"))
    assert pixels[:, 0].tolist() == [17] * 32 and not pixels[:, 1:].any()
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        open_image(rle4_bmp(5792, 5792), "image", max_pixels=1 << 25)
    assert time.perf_counter() - start < 0.1
    assert caught.value.code == ErrorCode.INVALID_IMAGE
    assert caught.value.details["compression"] == "RLE4"
    assert caught.value.details["allowed"] == MAX_RLE_PIXELS
    plain = open_image(encoded(Image.new("L", (2048, 2048), 9), "BMP"), "image", max_pixels=1 << 25)
    assert plain.size == (2048, 2048)  # uncompressed: read as it is
