"""POST /conv and POST /pool through HTTP: the tutorial's case on a real photo, every preset
and pooling kind against torch, uploads and JSON alike, PNGs, errors and hostile pictures."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import math
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_sample_images
from torch import nn

from schemas.vision import ConvRequest, PoolRequest
from service.main import create_app
from service.ops.vision import handlers, imageio
from tests.api.test_system import assert_error
from tests.conftest import make_settings

PRESETS = ["edge", "sobel_x", "sobel_y", "laplacian", "gaussian", "box", "sharpen", "emboss"]


@functools.cache
def tutorial_photo() -> np.ndarray:
    """A real 512×768 grayscale photo: scikit-learn's china.jpg (427×640) resized."""
    china = Image.fromarray(load_sample_images().images[0])
    return np.asarray(china.convert("L").resize((768, 512), Image.Resampling.BILINEAR))


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def tutorial_kernel() -> torch.Tensor:
    """The tutorial's code, verbatim: ones × −1 with 24 in the centre, [1, 1, 5, 5]."""
    kersize = 5
    ker = torch.ones(kersize, kersize, dtype=torch.float32) * -1
    ker[2, 2] = 24
    return ker.reshape((1, 1, kersize, kersize))


def tensor_of(wire: dict) -> torch.Tensor:
    dtypes = {"float32": "<f4", "float64": "<f8", "int64": "<i8"}
    if "b64" in wire:
        raw = np.frombuffer(base64.b64decode(wire["b64"]), dtype=dtypes[wire["dtype"]])
        return torch.from_numpy(raw.reshape(wire["shape"]).copy())
    return torch.tensor(wire["data"], dtype=getattr(torch, wire["dtype"]))


def upload(client: TestClient, path: str, picture: bytes, **fields: str):
    return client.post(
        path,
        data=fields,
        files={"image": ("photo.png", picture, "image/png")},
        params={"encoding": "b64"},
    )


def test_the_tutorials_convolution_and_pooling_on_a_photo(client: TestClient) -> None:
    photo = tutorial_photo()
    picture = encode(photo)
    response = upload(client, "/conv", picture, kernels='["edge", "random"]', seed="0")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input_shape"] == [1, 1, 512, 768]
    assert body["output"]["shape"] == [1, 2, 508, 764]
    assert body["kernels"] == ["edge", "random"]
    assert body["bias"] is None

    # The tutorial: myimgray_t [1, 1, 512, 768] float32, conv2d = nn.Conv2d(1, 2, 5) with
    # weight[0] = ker.
    myimgray_t = torch.from_numpy(photo.astype(np.float32).reshape(1, 1, 512, 768))
    torch.manual_seed(0)
    conv2d = nn.Conv2d(1, 2, (5, 5), bias=False)
    conv2d.weight.data[0] = tutorial_kernel()
    with torch.no_grad():
        imconv2dout = conv2d(myimgray_t)
    output = tensor_of(body["output"])
    torch.testing.assert_close(output[:, :1], F.conv2d(myimgray_t, tutorial_kernel()))
    torch.testing.assert_close(output, imconv2dout)
    torch.testing.assert_close(tensor_of(body["weight"]), conv2d.weight.data, rtol=0, atol=0)

    pooled = upload(
        client,
        "/conv",
        picture,
        kernels='["edge", "random"]',
        seed="0",
        pool='{"kind": "max", "kernel_size": 2, "stride": 2}',
    )
    assert pooled.status_code == 200, pooled.text
    assert pooled.json()["output"]["shape"] == [1, 2, 254, 382]
    assert pooled.json()["conv_shape"] == [1, 2, 508, 764]
    maxpool2 = nn.MaxPool2d(2, stride=2)
    torch.testing.assert_close(tensor_of(pooled.json()["output"]), maxpool2(imconv2dout))

    # The same through /pool, of the feature maps as a tensor.
    again = client.post(
        "/pool",
        json={
            "input": {"b64": body["output"]["b64"], "shape": [1, 2, 508, 764], "dtype": "float32"},
            "kind": "max",
            "kernel_size": 2,
            "stride": 2,
        },
        params={"encoding": "b64"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["output"]["shape"] == [1, 2, 254, 382]
    torch.testing.assert_close(tensor_of(again.json()["output"]), maxpool2(imconv2dout))


def test_multipart_and_json_give_identical_results(client: TestClient) -> None:
    photo = np.ascontiguousarray(tutorial_photo()[100:164, 200:296])
    picture = encode(photo)
    fields = {"kernels": ["edge", "random", "sobel_y"], "kernel_size": 3, "seed": 5}
    form = {"kernels": '["edge", "random", "sobel_y"]', "kernel_size": "3", "seed": "5"}
    as_upload = upload(client, "/conv", picture, **form).json()
    as_base64 = client.post(
        "/conv",
        json={**fields, "image": base64.b64encode(picture).decode()},
        params={"encoding": "b64"},
    ).json()
    as_tensor = client.post(
        "/conv", json={**fields, "input": photo.tolist()}, params={"encoding": "b64"}
    ).json()
    for other in (as_base64, as_tensor):
        assert other["output"] == as_upload["output"]
        assert other["weight"] == as_upload["weight"]
    pooled_upload = upload(client, "/pool", picture, kind="avg", kernel_size="[2, 3]").json()
    pooled_json = client.post(
        "/pool",
        json={"image": base64.b64encode(picture).decode(), "kind": "avg", "kernel_size": [2, 3]},
        params={"encoding": "b64"},
    ).json()
    assert pooled_upload["output"] == pooled_json["output"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_over_http_matches_torch(client: TestClient, name: str) -> None:
    x = torch.rand(9, 11, generator=torch.Generator().manual_seed(3)) * 255
    response = client.post("/conv", json={"input": x.tolist(), "kernels": [name], "kernel_size": 3})
    assert response.status_code == 200, response.text
    weight = tensor_of(response.json()["weight"])
    assert weight.shape == (1, 1, 3, 3)
    expected = F.conv2d(x.reshape(1, 1, 9, 11), weight)
    torch.testing.assert_close(tensor_of(response.json()["output"]), expected)


def test_rgb_keeps_three_channels_and_presets_sum_over_them(client: TestClient) -> None:
    photo = np.ascontiguousarray(load_sample_images().images[1][:40, :50])
    response = client.post(
        "/conv",
        data={"mode": "RGB", "kernels": '["box"]', "kernel_size": "3"},
        files={"image": ("flower.png", encode(photo), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input_shape"] == [1, 3, 40, 50]
    x = torch.from_numpy(photo).permute(2, 0, 1).float().unsqueeze(0)
    expected = F.conv2d(x.sum(dim=1, keepdim=True), torch.full((1, 1, 3, 3), 1 / 9))
    torch.testing.assert_close(tensor_of(body["output"]), expected, rtol=1e-5, atol=1e-3)


def test_padding_same_stride_dilation_groups_bias(client: TestClient) -> None:
    x = torch.rand(2, 4, 13, 17, generator=torch.Generator().manual_seed(8))
    same = client.post(
        "/conv",
        json={"input": x.tolist(), "kernels": ["gaussian", "emboss"], "padding": "same"},
    ).json()
    assert same["output"]["shape"] == [2, 2, 13, 17]
    body = client.post(
        "/conv",
        json={
            "input": x.tolist(),
            "kernels": ["random", "random"],
            "kernel_size": 3,
            "stride": [2, 1],
            "padding": [1, 0],
            "dilation": 2,
            "groups": 2,
            "bias": True,
            "seed": 4,
        },
    ).json()
    torch.manual_seed(4)
    layer = nn.Conv2d(4, 2, 3, stride=(2, 1), padding=(1, 0), dilation=2, groups=2)
    with torch.no_grad():
        expected = layer(x)
    torch.testing.assert_close(tensor_of(body["output"]), expected)
    torch.testing.assert_close(tensor_of(body["bias"]), layer.bias.data)


def test_explicit_kernels_activation_then_pool(client: TestClient) -> None:
    x = torch.randn(1, 2, 10, 10, generator=torch.Generator().manual_seed(1))
    kernel = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    body = client.post(
        "/conv",
        json={
            "input": x.tolist(),
            "kernels": [kernel.tolist()],
            "activation": {"function": "LeakyReLU", "params": {"negative_slope": 0.1}},
            "pool": {"kind": "lp", "norm_type": 2.0, "kernel_size": 2},
        },
    ).json()
    expected = F.lp_pool2d(F.leaky_relu(F.conv2d(x, kernel), 0.1), 2.0, 2)
    torch.testing.assert_close(tensor_of(body["output"]), expected, rtol=1e-5, atol=1e-5)
    assert body["kernels"] == ["kernel[0][0]", "kernel[0][1]", "kernel[0][2]"]


POOLS = [
    (
        {
            "kind": "max",
            "kernel_size": 3,
            "stride": 2,
            "padding": 1,
            "dilation": 2,
            "ceil_mode": True,
        },
        lambda x: F.max_pool2d(x, 3, 2, 1, 2, ceil_mode=True),
    ),
    (
        {"kind": "avg", "kernel_size": 3, "padding": 1, "count_include_pad": False},
        lambda x: F.avg_pool2d(x, 3, 3, 1, count_include_pad=False),
    ),
    (
        {"kind": "adaptive_avg", "output_size": [3, None]},
        lambda x: F.adaptive_avg_pool2d(x, (3, None)),
    ),
    ({"kind": "adaptive_max", "output_size": 4}, lambda x: F.adaptive_max_pool2d(x, 4)),
    (
        {"kind": "lp", "norm_type": 3.0, "kernel_size": [2, 3], "stride": 1},
        lambda x: F.lp_pool2d(x, 3.0, (2, 3), 1),
    ),
]


@pytest.mark.parametrize(("params", "expected"), POOLS, ids=[p["kind"] for p, _ in POOLS])
def test_every_pooling_kind_over_http_matches_torch(
    client: TestClient, params: dict, expected: object
) -> None:
    x = torch.rand(2, 3, 15, 19, generator=torch.Generator().manual_seed(6))
    response = client.post("/pool", json={"input": x.tolist(), **params})
    assert response.status_code == 200, response.text
    torch.testing.assert_close(tensor_of(response.json()["output"]), expected(x))  # type: ignore[operator]


def expected_figure(columns: list[tuple[int, int]], rows: int) -> tuple[int, int]:
    """The documented layout: panels 8 px apart, ≥ 64 px wide, under 20-px labels; maps
    under 128 px tall enlarged by a whole factor (at most 16)."""
    tallest = max(h for h, _ in columns)
    scale = max(1, min(16, 128 // tallest))
    width = 8 + sum(max(64, w * scale) + 8 for _, w in columns)
    height = 8 + rows * (20 + tallest * scale + 8)
    return width, height


def test_png_of_the_feature_maps(client: TestClient) -> None:
    picture = encode(tutorial_photo())
    response = client.post(
        "/conv",
        data={"kernels": '["edge", "random"]', "format": "png"},
        files={"image": ("photo.png", picture, "image/png")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    figure = Image.open(io.BytesIO(response.content))
    assert figure.format == "PNG"
    assert figure.size == expected_figure([(512, 768), (508, 764), (508, 764)], 1)
    assert response.headers["X-Panel-Count"] == "3"
    assert response.headers["X-Panel-Layout"] == "1x3"

    x = torch.rand(2, 3, 8, 12).tolist()
    pooled = client.post("/pool", json={"input": x, "kind": "max", "format": "png"})
    assert pooled.status_code == 200, pooled.text
    assert Image.open(io.BytesIO(pooled.content)).size == expected_figure(
        [(8, 12), (4, 6), (4, 6), (4, 6)], 2
    )
    assert pooled.headers["X-Panel-Layout"] == "2x4"


def test_a_constant_map_and_non_finite_values_still_draw(client: TestClient) -> None:
    body = {
        "input": [[1.0, "NaN", 1.0], [1.0, 1.0, "Infinity"], [1.0, 1.0, 1.0]],
        "kind": "avg",
        "kernel_size": 1,
        "format": "png",
    }
    response = client.post("/pool", json=body)
    assert response.status_code == 200, response.text
    Image.open(io.BytesIO(response.content)).load()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kernels": ["edge"]}, 422, "missing_input"),
        ({"input": [[1.0]], "image": "AAAA"}, 422, "validation_error"),
        ({"input": [[1.0] * 6] * 6, "kernels": ["edgy"]}, 422, "unknown_kernel"),
        (
            {"input": [[1.0] * 6] * 6, "kernels": ["edge"], "kernel_size": 4},
            422,
            "invalid_kernel_size",
        ),
        ({"input": [[1.0] * 3] * 3, "kernels": ["edge"]}, 422, "op_failed"),
        (
            {"input": [[[1.0] * 6] * 6] * 3, "kernels": ["edge", "box"], "groups": 2},
            422,
            "invalid_groups",
        ),
        ({"input": [[1.0] * 6] * 6, "bias_values": [1.0]}, 422, "validation_error"),
        ({"input": [[1.0] * 6] * 6, "padding": "same", "stride": 2}, 422, "op_failed"),
        ({"input": [[1.0] * 6] * 6, "activation": "nope"}, 422, "unknown_function"),
        ({"input": [[1.0] * 6] * 6, "kernels": [[1.0, 2.0]]}, 422, "shape_mismatch"),
        ({"image": "not base64!"}, 422, "invalid_base64"),
        ({"image": base64.b64encode(b"plain text").decode()}, 415, "unsupported_image"),
        ({"input": [[[[[1.0]]]]]}, 422, "shape_mismatch"),
    ],
)
def test_conv_errors(client: TestClient, body: dict, status: int, code: str) -> None:
    assert_error(client.post("/conv", json=body), status, code)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"input": [[1.0] * 4] * 4, "kind": "adaptive_avg"}, "validation_error"),
        ({"input": [[1.0] * 4] * 4, "kind": "max", "norm_type": 2.0}, "validation_error"),
        ({"input": [[1.0] * 4] * 4, "kind": "lp", "padding": 1}, "validation_error"),
        ({"input": [[1.0] * 4] * 4, "kind": "max", "kernel_size": 2, "padding": 2}, "op_failed"),
        ({"input": [[1.0] * 4] * 4, "kind": "max", "kernel_size": 8}, "op_failed"),
        ({"input": [[1.0] * 4] * 4, "kind": "median"}, "validation_error"),
    ],
)
def test_pool_errors(client: TestClient, body: dict, code: str) -> None:
    assert_error(client.post("/pool", json=body), 422, code)


def test_limits(client: TestClient) -> None:
    side = 512
    raw = base64.b64encode(bytes(4 * side * side)).decode()
    big = {"b64": raw, "shape": [1, 1, side, side], "dtype": "float32"}
    # 20 outputs of [510, 510] are one tensor over the element limit (4 Mi in the tests).
    body = assert_error(
        client.post("/conv", json={"input": big, "kernels": ["random"] * 20, "kernel_size": 3}),
        413,
        "elements_limit",
    )
    assert body["details"]["limit"] == "max_elements"
    # 8 kernels of 63×63: 2·8·450²·63² ≈ 1.3e10 FLOPs, over the limit of 1e10.
    body = assert_error(
        client.post("/conv", json={"input": big, "kernels": ["random"] * 8, "kernel_size": 63}),
        413,
        "flops_limit",
    )
    assert body["details"]["requested"] == 2 * 8 * 450 * 450 * 63 * 63


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(bytes((width + 7) // 8 + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def test_hostile_pictures_are_clear_4xx_and_the_server_stays_healthy(client: TestClient) -> None:
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 16 * 1024
    start = time.process_time()  # CPU time: the work, not the machine's load
    response = client.post("/conv", files={"image": ("bomb.png", bomb, "image/png")})
    assert time.process_time() - start < 1.0
    body = assert_error(response, 413, "image_pixels_limit")
    assert body["details"]["requested"] == 900_000_000

    jpeg = encode(np.asarray(load_sample_images().images[0]), "JPEG")
    truncated = client.post(
        "/pool", files={"image": ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")}
    )
    assert_error(truncated, 422, "invalid_image")

    text = client.post(
        "/conv", files={"image": ("notes.png", b"just some text, honestly\n" * 20, "image/png")}
    )
    assert_error(text, 415, "unsupported_image")

    # Pictures over the element limit (4 Mi) but under the pixel limit: refused from the header.
    wide = png_header_only(4096, 2048)
    assert_error(
        client.post("/pool", files={"image": ("w.png", wide, "image/png")}), 413, "elements_limit"
    )

    both = client.post(
        "/conv",
        data={"input": "[[1, 2], [3, 4]]"},
        files={"image": ("x.png", encode(np.zeros((4, 4), np.uint8)), "image/png")},
    )
    assert_error(both, 422, "ambiguous_input")
    assert client.get("/health").json() == {"status": "ok"}
    ok = client.post(
        "/pool", files={"image": ("ok.png", encode(np.zeros((4, 4), np.uint8)), "image/png")}
    )
    assert ok.status_code == 200


def test_pictures_are_never_decoded_on_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, body_worker_calls: list[str]
) -> None:
    """However small the file (a lossless WebP of 1.3 KB holds 33 million pixels), nor in a
    thread of the server: in a body worker, stopped at the deadline."""
    on_loop: list[bool] = []
    decode = imageio.load_pixels

    def watched(*args: object, **kwargs: object) -> np.ndarray:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a thread of the pool: no event loop runs there
            on_loop.append(False)
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(imageio, "load_pixels", watched)
    png = encode(np.arange(64, dtype=np.uint8).reshape(8, 8))
    for path, fields in (("/conv", {"kernels": '["edge"]'}), ("/pool", {"kernel_size": "2"})):
        uploaded = client.post(path, data=fields, files={"image": ("x.png", png, "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        sent = {k: orjson.loads(v) for k, v in fields.items()}
        as_text = client.post(path, json={**sent, "image": base64.b64encode(png).decode()})
        assert as_text.status_code == 200, as_text.text
    assert on_loop == []  # not in this process
    assert body_worker_calls == ["prepare_elsewhere"] * 4


def test_over_limit_pictures_are_a_413_while_every_compute_slot_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pictures are decoded and checked before a compute slot is taken: with the only slot
    held by a running convolution, a bomb is a 413 at once, never a 429 from the queue."""
    running, release = threading.Event(), threading.Event()
    forward = handlers.conv_forward

    def held_forward(*args: object, **kwargs: object) -> object:
        running.set()
        release.wait(30)
        return forward(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(handlers, "conv_forward", held_forward)
    # Compute in threads of this process, where the patched forward runs.
    settings = make_settings(max_inflight_per_device=1, queue_timeout_s=0, isolate=False)
    small = {"input": [[1.0] * 6] * 6, "kernels": ["edge"], "kernel_size": 3}
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        slow = pool.submit(client.post, "/conv", json=small)
        try:
            assert running.wait(30)
            # The slot is taken: a request that passes every limit waits and is refused.
            assert_error(
                client.post("/pool", json={"input": small["input"]}), 429, "too_many_requests"
            )
            bomb = png_header_only(30000, 30000)
            response = client.post("/conv", files={"image": ("bomb.png", bomb, "image/png")})
            body = assert_error(response, 413, "image_pixels_limit")
            assert body["details"]["requested"] == 900_000_000
            as_base64 = {"image": base64.b64encode(bomb).decode(), "kind": "max"}
            assert_error(client.post("/pool", json=as_base64), 413, "image_pixels_limit")
            wide = png_header_only(4096, 2048)  # under the pixel limit, over the element limit
            response = client.post("/pool", files={"image": ("w.png", wide, "image/png")})
            assert_error(response, 413, "elements_limit")
        finally:
            release.set()
        assert slow.result(timeout=30).status_code == 200


def test_the_picture_and_png_limits_are_the_configured_ones() -> None:
    settings = make_settings(max_image_pixels=1000, max_png_pixels=50_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        picture = encode(np.zeros((40, 30), np.uint8))
        response = client.post("/conv", files={"image": ("p.png", picture, "image/png")})
        body = assert_error(response, 413, "image_pixels_limit")
        assert body["details"]["allowed"] == 1000
        assert body["details"]["requested"] == 40 * 30
        x = torch.zeros(1, 1, 200, 200).tolist()
        response = client.post("/pool", json={"input": x, "format": "png"})
        body = assert_error(response, 413, "png_pixels_limit")
        assert body["details"]["allowed"] == 50_000
        width, height = expected_figure([(200, 200), (100, 100)], 1)
        assert body["details"]["requested"] == width * height


def test_the_docs_offer_a_file_picker(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/conv", "/pool"):
        content = schema["paths"][path]["post"]["requestBody"]["content"]
        assert content["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
        assert "$ref" in content["application/json"]["schema"]


@pytest.mark.parametrize(
    ("path", "example"),
    [("/conv", e) for e in ConvRequest.model_config["json_schema_extra"]["examples"]]
    + [("/pool", e) for e in PoolRequest.model_config["json_schema_extra"]["examples"]],
)
def test_every_documented_example_works(client: TestClient, path: str, example: dict) -> None:
    response = client.post(path, json=example)
    assert response.status_code == 200, response.text


@pytest.mark.gpu
def test_cuda_gives_the_cpus_results(client: TestClient) -> None:
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0)).tolist()
    body = {
        "input": x,
        "kernels": ["edge", "random", "sobel_x"],
        "kernel_size": 3,
        "seed": 1,
        "activation": "relu",
        "pool": {"kind": "avg", "kernel_size": 2},
    }
    cpu = client.post("/conv", json={**body, "device": "cpu"}).json()
    gpu = client.post("/conv", json={**body, "device": "cuda"}).json()
    assert gpu["device"] == "cuda:0"
    assert gpu["weight"] == cpu["weight"]
    torch.testing.assert_close(
        tensor_of(gpu["output"]), tensor_of(cpu["output"]), rtol=1e-4, atol=1e-3
    )
    for kind in ("max", "lp"):
        pooled = {"input": x, "kind": kind, "kernel_size": 3}
        on_cpu = client.post("/pool", json={**pooled, "device": "cpu"}).json()
        on_gpu = client.post("/pool", json={**pooled, "device": "cuda"}).json()
        torch.testing.assert_close(
            tensor_of(on_gpu["output"]), tensor_of(on_cpu["output"]), rtol=1e-4, atol=1e-4
        )
    png = client.post("/conv", json={**body, "device": "cuda", "format": "png"})
    assert png.status_code == 200


# --- the real cost of a convolution and a pooling, charged first -----------------------------

CALIBRATION = {"cpu/float32": 1e11, "cpu/float64": 5e10, "cpu/float16": 1e9, "cpu/elements": 1e9}
"""Fixed device rates: the predicted times do not depend on the machine."""


@pytest.fixture(scope="module")
def default_client() -> Iterator[TestClient]:
    """An app with the default limits on bodies, tensors and FLOPs, on the CPU, at fixed
    rates."""
    settings = make_settings(
        device="cpu",
        max_body_bytes=64 << 20,
        max_elements=1 << 25,
        max_total_elements=1 << 27,
        max_flops=2e12,
        request_timeout_s=30.0,
        calibration=CALIBRATION,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _zeros(shape: list[int], dtype: str = "float32") -> dict[str, object]:
    raw = np.zeros(math.prod(shape), dtype=dtype).tobytes()
    return {"b64": base64.b64encode(raw).decode(), "shape": shape, "dtype": dtype}


HUGE_WINDOW = {"kind": "max", "kernel_size": 513, "stride": 1}
COSTLY = [
    # An empty batch beside huge sides: torch's shape checks alone took 15–18 s.
    ("/pool", [1 << 25, 0, 1, 1], "float32", {"kind": "adaptive_avg", "output_size": 1}, 422),
    ("/conv", [1 << 25, 0, 1, 1], "float32", {"kernels": [[[1.0]]]}, 422),
    ("/pool", [0, 1 << 25, 1, 1], "float32", {"kind": "max", "format": "png"}, 422),
    # 513² reads per output of a 1024² map: over a minute of comparisons.
    ("/pool", [1, 1, 1024, 1024], "float32", HUGE_WINDOW, 413),
    # 96² reads per output: 8 G reads, which torch's pooling makes at 0.4 to 1.5 G a second
    # on 2 cores (charged at the copy rate, a 256² window ran to the 504).
    ("/pool", [1, 1, 1024, 1024], "float32", {"kind": "max", "kernel_size": 96, "stride": 1}, 413),
    # float64 unfolds its input on the CPU: 63² values per output element (2.4e9).
    ("/conv", [1, 1, 1024, 1024], "float64", {"kernels": ["box"], "kernel_size": 63}, 413),
    # float16 convolves a hundred times slower than float32 on a CPU.
    ("/conv", [1, 3, 1024, 1024], "float16", {"kernels": ["random"] * 64, "kernel_size": 9}, 413),
]
CODES = {422: ("shape_mismatch",), 413: ("over_time_budget", "elements_limit")}


@pytest.mark.parametrize(("path", "shape", "dtype", "params", "status"), COSTLY)
def test_costly_requests_are_refused_at_once(
    default_client: TestClient,
    path: str,
    shape: list[int],
    dtype: str,
    params: dict[str, object],
    status: int,
) -> None:
    body = {"input": _zeros(shape, dtype), **params}
    start = time.perf_counter()
    response = default_client.post(path, json=body)
    seconds = time.perf_counter() - start
    assert response.status_code == status, response.text
    assert response.json()["code"] in CODES[status]
    assert seconds < 1.5  # reading and decoding the body included


def test_a_float32_convolution_near_the_limits_runs(default_client: TestClient) -> None:
    body = {
        "input": _zeros([1, 1, 512, 512]),
        "kernels": ["box", "gaussian"],
        "kernel_size": 31,
        "pool": {"kind": "max", "kernel_size": 15, "stride": 1},
        "seed": 0,
    }
    response = default_client.post("/conv", json=body, params={"encoding": "b64"})
    assert response.status_code == 200, response.text
    assert response.json()["output"]["shape"] == [1, 2, 468, 468]
