"""POST /data/images: built-in sets, uploads and ImageFolder zips through torchvision
transforms, checked against computations in the test; hostile archives."""

from __future__ import annotations

import base64
import io
import json
import math
import stat
import struct
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from schemas.images import DataImagesRequest
from service.main import create_app
from service.ops.vision.imageio import MAX_JPEG_SCANS
from tests.api.test_system import assert_error
from tests.conftest import make_settings
from tests.unit.ops.vision.test_imageio import repeated_scans

PHOTOS = load_sample_images().images


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def crop(index: int, top: int, left: int, size: int = 12) -> np.ndarray:
    return np.ascontiguousarray(PHOTOS[index][top : top + size, left : left + size])


# An ImageFolder: two classes of 12×12 RGB crops, plus entries that are not pictures.
FOLDER = {
    "dog/b.png": crop(1, 200, 300),
    "dog/a.png": crop(1, 100, 100),
    "cat/z.png": crop(0, 50, 60),
    "cat/y.png": crop(0, 300, 400),
    "cat/x.png": crop(0, 10, 20),
}
EXTRAS = {
    "README.txt": b"class folders of pictures",
    "cat/notes.md": b"# not a picture",
    "__MACOSX/cat/._x.png": b"resource fork",
    "dog/.DS_Store": b"\x00\x00\x00\x01Bud1",
}


def make_zip(entries: dict[str, bytes], prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(prefix + name, data)
    return buffer.getvalue()


def folder_zip(prefix: str = "") -> bytes:
    return make_zip({**{n: png(p) for n, p in FOLDER.items()}, **EXTRAS}, prefix)


def tensor_of(wire: dict) -> torch.Tensor:
    dtypes = {"float32": "<f4", "float64": "<f8", "int64": "<i8", "uint8": "u1"}
    if "b64" in wire:
        raw = np.frombuffer(base64.b64decode(wire["b64"]), dtype=dtypes[wire["dtype"]])
        return torch.from_numpy(raw.reshape(wire["shape"]).copy())
    return torch.tensor(wire["data"], dtype=getattr(torch, wire["dtype"]))


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def test_digits_as_images(client: TestClient) -> None:
    body = ok(client.post("/data/images", json={"dataset": "digits", "batch_size": 16}))
    digits = load_digits()
    assert body["source"] == "digits"
    assert body["classes"] == [str(d) for d in range(10)]
    assert body["class_to_idx"] == {str(d): d for d in range(10)}
    counts = np.bincount(digits.target, minlength=10)
    assert body["counts"] == {str(d): int(counts[d]) for d in range(10)}
    assert body["n_images"] == 1797
    assert body["image_shape"] == [1, 8, 8]
    assert body["n_batches"] == math.ceil(1797 / 16)
    assert body["batch"]["x_shape"] == [16, 1, 8, 8]
    assert body["batch"]["x_dtype"] == "float32"
    assert body["batch"]["y_shape"] == [16]
    assert body["batch"]["y_dtype"] == "int64"
    assert body["batch"]["targets"] == digits.target[:16].tolist()
    # The default pipeline is ToImage + ToDtype(float32, scale=True): 0–16 → 0–255 → 0–1.
    values = np.rint(digits.images * 255 / 16).astype(np.float32) / np.float32(255)
    assert body["mean"] == pytest.approx([values.astype(np.float64).mean()], rel=1e-7)
    assert body["std"] == pytest.approx([values.astype(np.float64).std(ddof=1)], rel=1e-7)
    assert body["transforms"] == ["ToImage()", "ToDtype(dtype='float32', scale=True)"]


def test_digits_normalised_and_shuffled_with_the_data(client: TestClient) -> None:
    request = {
        "dataset": "digits",
        "transforms": [
            {"name": "ToImage"},
            {"name": "ToDtype", "dtype": "float32", "scale": True},
            {"name": "Normalize", "mean": [0.5], "std": [0.25]},
        ],
        "batch_size": 10,
        "shuffle": True,
        "seed": 3,
        "max_images": 100,
        "include_data": True,
    }
    body = ok(client.post("/data/images", json=request, params={"encoding": "b64"}))
    digits = load_digits()
    pixels = np.rint(digits.images[:100] * 255 / 16) / 255
    normalised = (pixels - 0.5) / 0.25
    assert body["mean"] == pytest.approx([normalised.mean()], rel=1e-6)
    assert body["std"] == pytest.approx([normalised.std(ddof=1)], rel=1e-6)
    loader = DataLoader(
        range(100), batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    order = next(iter(loader))
    assert body["batch"]["targets"] == digits.target[order.numpy()].tolist()
    x = tensor_of(body["batch"]["x"])
    expected = torch.from_numpy(normalised[order.numpy()]).float().unsqueeze(1)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(
        tensor_of(body["batch"]["y"]), torch.from_numpy(digits.target[order.numpy()])
    )


def test_an_empty_pipeline_leaves_uint8(client: TestClient) -> None:
    request = {"dataset": "digits", "transforms": [], "max_images": 4, "include_data": True}
    body = ok(client.post("/data/images", json=request))
    assert body["batch"]["x_dtype"] == "uint8"
    expected = np.rint(load_digits().images[:4] * 255 / 16).astype(np.uint8)[:, None]
    np.testing.assert_array_equal(np.array(body["batch"]["x"]["data"]), expected)


def test_a_zip_in_imagefolder_layout(client: TestClient) -> None:
    archive = folder_zip()
    upload = client.post(
        "/data/images",
        data={"batch_size": "4"},
        files={"archive": ("pets.zip", archive, "application/zip")},
    )
    body = ok(upload)
    assert body["source"] == "archive"
    assert body["classes"] == ["cat", "dog"]
    assert body["class_to_idx"] == {"cat": 0, "dog": 1}
    assert body["counts"] == {"cat": 3, "dog": 2}
    assert sorted(body["skipped"]) == sorted(EXTRAS)
    assert body["n_skipped"] == len(EXTRAS)
    assert body["batch"]["x_shape"] == [4, 3, 12, 12]
    assert body["batch"]["targets"] == [0, 0, 0, 1]
    assert body["n_batches"] == 2
    pixels = np.stack([FOLDER[name] for name in sorted(FOLDER)]).astype(np.float64) / 255
    channels = pixels.transpose(3, 0, 1, 2).reshape(3, -1)
    assert body["mean"] == pytest.approx(channels.mean(axis=1).tolist(), rel=1e-6)
    assert body["std"] == pytest.approx(channels.std(axis=1, ddof=1).tolist(), rel=1e-6)

    as_json = ok(
        client.post(
            "/data/images", json={"archive": base64.b64encode(archive).decode(), "batch_size": 4}
        )
    )
    for key in ("classes", "counts", "batch", "mean", "std", "skipped"):
        assert as_json[key] == body[key]
    nested = ok(
        client.post(
            "/data/images", files={"archive": ("p.zip", folder_zip("pets/"), "application/zip")}
        )
    )
    assert nested["classes"] == ["cat", "dog"]
    assert nested["counts"] == body["counts"]


def test_uploaded_images_with_labels(client: TestClient) -> None:
    pictures = [png(crop(0, 0, 0)), png(crop(1, 0, 0)), png(crop(0, 40, 40))]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(pictures)]
    body = ok(
        client.post(
            "/data/images",
            data={"labels": '["zebra", "ant", "zebra"]', "mode": "L", "batch_size": "8"},
            files=files,
        )
    )
    assert body["source"] == "images"
    assert body["classes"] == ["ant", "zebra"]
    assert body["counts"] == {"ant": 1, "zebra": 2}
    assert body["batch"]["targets"] == [1, 0, 1]
    assert body["batch"]["x_shape"] == [3, 1, 12, 12]
    as_json = ok(
        client.post(
            "/data/images",
            json={
                "images": [base64.b64encode(p).decode() for p in pictures],
                "labels": ["zebra", "ant", "zebra"],
                "mode": "L",
                "batch_size": 8,
            },
        )
    )
    assert (as_json["batch"], as_json["mean"], as_json["std"]) == (
        body["batch"],
        body["mean"],
        body["std"],
    )
    unlabelled = ok(client.post("/data/images", files=files[:1]))
    assert unlabelled["classes"] == ["images"]


def test_random_transforms_run_under_the_seed_as_torchvision_runs_them(client: TestClient) -> None:
    transforms = [
        {"name": "RandomResizedCrop", "size": [32, 48], "scale": [0.3, 1.0], "antialias": True},
        {"name": "RandomHorizontalFlip", "p": 0.5},
        {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4},
        {"name": "RandomRotation", "degrees": 15},
        {"name": "ToImage"},
        {"name": "ToDtype", "dtype": "float32", "scale": True},
    ]
    request = {
        "dataset": "sample_images",
        "transforms": transforms,
        "seed": 21,
        "include_data": True,
    }
    body = ok(client.post("/data/images", json=request, params={"encoding": "b64"}))
    again = ok(client.post("/data/images", json=request, params={"encoding": "b64"}))
    other = ok(
        client.post("/data/images", json={**request, "seed": 22}, params={"encoding": "b64"})
    )
    assert body["batch"]["x"] == again["batch"]["x"]
    assert body["batch"]["x"] != other["batch"]["x"]
    assert body["classes"] == ["china", "flower"]

    pipeline = v2.Compose(
        [
            v2.RandomResizedCrop((32, 48), scale=(0.3, 1.0), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ColorJitter(brightness=0.4, contrast=0.4),
            v2.RandomRotation(15),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    torch.manual_seed(21)
    expected = torch.stack([pipeline(Image.fromarray(photo)) for photo in PHOTOS])
    torch.testing.assert_close(tensor_of(body["batch"]["x"]), expected.as_subclass(torch.Tensor))


def test_png_grid(client: TestClient) -> None:
    request = {"dataset": "digits", "batch_size": 12, "columns": 5, "format": "png"}
    response = client.post("/data/images", json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    grid = Image.open(io.BytesIO(response.content))
    # make_grid: padding 2; cells of 8×8 enlarged 8× (to 64 pixels) under 20-pixel labels.
    assert grid.size == (5 * (64 + 2) + 2, 3 * (64 + 20 + 2) + 2)
    assert response.headers["X-Panel-Layout"] == "3x5"
    photos = client.post(
        "/data/images",
        json={
            "dataset": "sample_images",
            "transforms": [{"name": "Resize", "size": [40, 60]}],
            "format": "png",
        },
    )
    assert photos.status_code == 200, photos.text
    assert Image.open(io.BytesIO(photos.content)).size == (2 * (60 + 2) + 2, 40 + 20 + 2 + 2)


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"dataset": "digits", "transforms": [{"name": "Resize", "sise": 4}]}, "unknown_param"),
        ({"dataset": "digits", "transforms": [{"name": "CenterCrop"}]}, "missing_param"),
        (
            {"dataset": "digits", "transforms": [{"name": "GaussianBlur", "kernel_size": 4}]},
            "invalid_param",
        ),
        (
            {"dataset": "digits", "transforms": [{"name": "ToDtype", "dtype": "float99"}]},
            "invalid_dtype",
        ),
        (
            {
                "dataset": "digits",
                "transforms": [
                    {"name": "ToImage"},
                    {"name": "Normalize", "mean": [0.5], "std": [0.5]},
                ],
            },
            "transform_failed",
        ),
        ({"dataset": "digits", "transforms": [{"name": "Rotate"}]}, "validation_error"),
        (
            {"dataset": "digits", "transforms": [{"name": "Resize", "size": {"h": 1}}]},
            "validation_error",
        ),
        ({"dataset": "imagenet"}, "validation_error"),
        ({}, "missing_input"),
        ({"dataset": "digits", "archive": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}, "validation_error"),
        ({"images": ["AAAA"], "labels": ["a", "b"]}, "shape_mismatch"),
        ({"dataset": "digits", "drop_last": True, "batch_size": 4096}, "empty_batch"),
    ],
)
def test_errors(client: TestClient, request_body: dict, code: str) -> None:
    assert_error(client.post("/data/images", json=request_body), 422, code)


def test_pictures_of_different_sizes_need_a_resize(client: TestClient) -> None:
    files = [
        ("images", ("a.png", png(crop(0, 0, 0, 10)), "image/png")),
        ("images", ("b.png", png(crop(0, 0, 0, 14)), "image/png")),
    ]
    assert_error(client.post("/data/images", files=files), 422, "size_mismatch")
    one_by_one = ok(client.post("/data/images", data={"batch_size": "1"}, files=files))
    assert one_by_one["image_shape"] is None
    resized = ok(
        client.post(
            "/data/images",
            data={"transforms": '[{"name": "Resize", "size": [8, 8]}, {"name": "ToImage"}]'},
            files=files,
        )
    )
    assert resized["batch"]["x_shape"] == [2, 3, 8, 8]


def test_transform_outputs_are_charged_before_they_run(client: TestClient) -> None:
    request = {"dataset": "sample_images", "transforms": [{"name": "Resize", "size": [4000, 4000]}]}
    start = time.process_time()  # CPU time: the work, not the machine's load
    body = assert_error(client.post("/data/images", json=request), 413, "elements_limit")
    assert time.process_time() - start < 1.0
    assert body["details"]["requested"] == 3 * 4000 * 4000
    padded = {"dataset": "digits", "transforms": [{"name": "Pad", "padding": 60000}]}
    assert_error(client.post("/data/images", json=padded), 413, "elements_limit")


# --- hostile archives --------------------------------------------------------------------------


def bomb_zip(megabytes: int = 40, declared: int | None = None) -> bytes:
    """One entry of ``megabytes`` MiB of zeros (about a thousandth of that compressed);
    ``declared`` rewrites the uncompressed size its directory entry claims."""
    buffer = io.BytesIO()
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("cat/bomb.png", "w", force_zip64=True) as entry,
    ):
        for _ in range(megabytes):
            entry.write(chunk)
    data = buffer.getvalue()
    return data if declared is None else set_declared_sizes(data, declared)


def set_declared_sizes(data: bytes, size: int) -> bytes:
    """Rewrite every central-directory entry's uncompressed size (ZIP64 extra field too)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        name_length, extra_length = struct.unpack_from("<HH", out, at + 28)
        if struct.unpack_from("<I", out, at + 24)[0] == 0xFFFFFFFF:
            extra = at + 46 + name_length
            end = extra + extra_length
            while extra < end:
                tag, length = struct.unpack_from("<HH", out, extra)
                if tag == 1:
                    struct.pack_into("<Q", out, extra + 4, size)
                extra += 4 + length
        else:
            struct.pack_into("<I", out, at + 24, size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


def special_zip(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, data)
    return buffer.getvalue()


def symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("cat/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def many_entries(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(count):
            archive.writestr(f"cat/{index}.png", b"")
    return buffer.getvalue()


HOSTILE = [
    ("bomb", bomb_zip, 413, "archive_entry_bytes_limit"),
    ("lying-small", lambda: bomb_zip(40, declared=1000), 422, "corrupt_archive"),
    ("many-entries", lambda: many_entries(10_001), 413, "archive_entries_limit"),
    ("directory-flood", lambda: b"PK\x01\x02" * 500_000, 413, "archive_entries_limit"),
    (
        "declared-total",
        lambda: set_declared_sizes(make_zip({f"c/{i}.png": b"x" for i in range(9)}), 30 << 20),
        413,
        "archive_bytes_limit",
    ),
    (
        "dot-dot",
        lambda: make_zip({"../../etc/evil.png": png(crop(0, 0, 0))}),
        422,
        "unsafe_archive_entry",
    ),
    ("nested-dot-dot", lambda: make_zip({"cat/../../x.png": b"x"}), 422, "unsafe_archive_entry"),
    (
        "absolute",
        lambda: special_zip(zipfile.ZipInfo("/tmp/cat/x.png")),
        422,
        "unsafe_archive_entry",
    ),
    (
        "windows-absolute",
        lambda: special_zip(zipfile.ZipInfo("C:\\cat\\x.png")),
        422,
        "unsafe_archive_entry",
    ),
    ("symlink", lambda: special_zip(symlink(), b"/etc/passwd"), 422, "unsafe_archive_entry"),
    ("empty", lambda: make_zip({}), 422, "empty_archive"),
    ("only-non-pictures", lambda: make_zip(EXTRAS), 422, "empty_archive"),
    (
        "text-named-png",
        lambda: make_zip({"cat/a.png": b"not a picture at all"}),
        415,
        "unsupported_image",
    ),
    ("not-a-zip", lambda: b"PK\x03\x04 this is no zip", 415, "unsupported_archive"),
    ("picture-bomb", lambda: make_zip({"cat/big.png": _huge_png()}), 413, "image_pixels_limit"),
]


def _huge_png() -> bytes:
    from tests.api.test_conv_pool import png_header_only  # noqa: PLC0415

    return png_header_only(30000, 30000)


@pytest.mark.parametrize(("name", "make", "status", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_archives_are_clear_4xx(
    client: TestClient, name: str, make: object, status: int, code: str
) -> None:
    data = make()  # type: ignore[operator]
    start = time.process_time()  # CPU time: the work, not the machine's load
    response = client.post(
        "/data/images", files={"archive": (f"{name}.zip", data, "application/zip")}
    )
    elapsed = time.process_time() - start
    assert_error(response, status, code)
    assert elapsed < 1.0, f"{name} took {elapsed:.2f} s"
    assert client.get("/health").json() == {"status": "ok"}


def test_the_docs_offer_file_pickers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/data/images"]["post"]["requestBody"]["content"]["multipart/form-data"]
    properties = form["schema"]["properties"]
    assert properties["archive"]["format"] == "binary"
    assert properties["images"]["type"] == "array"
    assert properties["images"]["items"]["format"] == "binary"


@pytest.mark.parametrize("example", DataImagesRequest.model_config["json_schema_extra"]["examples"])
def test_every_documented_example_works(client: TestClient, example: dict) -> None:
    response = client.post("/data/images", json=example)
    assert response.status_code == 200, response.text


@pytest.mark.gpu
def test_statistics_on_cuda_agree(client: TestClient) -> None:
    request = {"dataset": "digits", "max_images": 200}
    cpu = ok(client.post("/data/images", json={**request, "device": "cpu"}))
    gpu = ok(client.post("/data/images", json={**request, "device": "cuda"}))
    assert gpu["device"] == "cuda:0"
    assert gpu["mean"] == pytest.approx(cpu["mean"], rel=1e-9)
    assert gpu["std"] == pytest.approx(cpu["std"], rel=1e-9)


# --- transforms charged by their real algorithm ---------------------------------------------

CALIBRATION = {"cpu/float32": 1e11, "cpu/float64": 5e10, "cpu/float16": 1e9, "cpu/elements": 1e9}
"""Fixed device rates: the predicted times do not depend on the machine."""


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    """An app with the default limits on tensors and FLOPs and fixed device rates."""
    settings = make_settings(
        max_elements=1 << 25,
        max_total_elements=1 << 27,
        max_flops=2e12,
        request_timeout_s=30.0,
        calibration=CALIBRATION,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_huge_blur_is_refused_at_once(default_client: TestClient) -> None:
    """An 801×801 Gaussian blur is a full 2-D convolution: 2 · 801² FLOPs per output
    element, 1.35e12 for a 1024² photo (minutes of work), refused before it starts."""
    request = {
        "dataset": "sample_images",
        "batch_size": 1,
        "transforms": [
            {"name": "Resize", "size": [1024, 1024]},
            {"name": "GaussianBlur", "kernel_size": 801},
        ],
    }
    start = time.perf_counter()
    response = default_client.post("/data/images", json=request)
    assert time.perf_counter() - start < 1.0
    assert response.status_code == 413, response.text
    assert response.json()["code"] in ("flops_limit", "over_time_budget")
    # A blur an order of magnitude smaller runs.
    request["transforms"] = [
        {"name": "Resize", "size": [128, 128]},
        {"name": "GaussianBlur", "kernel_size": 31},
    ]
    response = default_client.post("/data/images", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["image_shape"] == [3, 128, 128]


def test_empty_pictures_beside_huge_sides_are_refused_at_once(default_client: TestClient) -> None:
    for transforms in (
        [{"name": "CenterCrop", "size": [0, 65536]}],  # padded to 65536 wide first
        [{"name": "Resize", "size": [0, 65536]}, {"name": "Pad", "padding": [0, 65536]}],
    ):
        request = {"dataset": "sample_images", "transforms": transforms}
        start = time.perf_counter()
        response = default_client.post("/data/images", json=request)
        assert time.perf_counter() - start < 1.0
        assert_error(response, 413, "elements_limit")


def test_each_transform_of_each_picture_is_charged(default_client: TestClient) -> None:
    """1797 digits through 16 blurs: each call builds a kernel and convolves (about a
    millisecond, on a busy CPU more), refused before it starts."""
    request = {
        "dataset": "digits",
        "transforms": [{"name": "GaussianBlur", "kernel_size": 3}] * 16,
    }
    start = time.perf_counter()
    response = default_client.post("/data/images", json=request)
    assert time.perf_counter() - start < 1.0
    assert_error(response, 413, "over_time_budget")
    request["max_images"] = 10
    assert default_client.post("/data/images", json=request).status_code == 200


def test_uploaded_pictures_are_decoded_within_the_time_limit() -> None:
    """A JPEG of few scans that still takes its decoder a second (a pass over 33 million
    pixels for each of its 200 scans): uploads are decoded in a body worker, stopped at the
    deadline (504), not in a thread of the server, which would decode it to the end."""
    side = 5792
    settings = make_settings(
        request_timeout_s=0.3, max_elements=1 << 25, max_total_elements=1 << 27
    )
    bomb = repeated_scans(Image.new("L", (side, side), 128), 200)
    assert bomb.count(b"\xff\xda") <= MAX_JPEG_SCANS
    resize = [{"name": "Resize", "size": [8, 8]}]
    encoded = base64.b64encode(bomb).decode()
    with io.BytesIO() as buffer:
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("grey/scans.jpg", bomb)
        zipped = base64.b64encode(buffer.getvalue()).decode()
    # Uploaded, and in base64 in JSON (pictures, an archive, /conv's image): a 16 KB TIFF
    # of millions of strips in JSON decoded for 52 s in a thread of the server.
    requests: list[tuple[str, dict[str, Any]]] = [
        (
            "/data/images",
            {
                "files": [("images", ("scans.jpg", bomb, "image/jpeg"))],
                "data": {"mode": "L", "transforms": json.dumps(resize)},
            },
        ),
        ("/data/images", {"json": {"images": [encoded], "mode": "L", "transforms": resize}}),
        ("/data/images", {"json": {"archive": zipped, "mode": "L", "transforms": resize}}),
        ("/conv", {"json": {"image": encoded, "kernels": ["box"], "kernel_size": 3}}),
    ]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path, request in requests:
            start = time.perf_counter()
            response = client.post(path, **request)
            elapsed = time.perf_counter() - start
            payload = assert_error(response, 504, "timeout")
            assert payload["details"]["limit"] == "request_timeout_s"
            assert elapsed < 3.0, path
            assert client.get("/health").status_code == 200
