"""The tutorial's convolution and pooling over HTTP against the same work in-process.

A real 512×768 photo (scikit-learn's china.jpg, resized; tutorial chapters 6.1 and 6.2) goes
up as an uploaded file (multipart) to ``POST /conv?encoding=b64`` with ``kernels: ["edge",
"random"]`` (5×5) and ``pool: max 2/2``; the answer is JSON with base64 tensors: the pooled
[1, 2, 254, 382] output and the weight. The in-process baseline does the same work without
HTTP or the framework: Pillow decodes the file and converts it to grayscale, numpy and torch
make the [1, 1, 512, 768] float32 tensor, the weight is built (the tutorial's kernel and a
seeded ``nn.Conv2d``-style draw), ``conv2d`` and ``max_pool2d`` run, and the response
envelope is encoded (base64 of the tensors, ``orjson.dumps``). Goal: HTTP <= 1.5x.

The multipart body is encoded once; the timed region is the HTTP round trip only (send the
bytes on a keep-alive ``httpx.Client``, read the whole response). Runs alternate so that
load from elsewhere hits both alike, with a short pause before each (``--pause``): both
sides run torch's OpenMP threads, which spin-wait for a while after their work. Both sides
are warmed up first (``--warmup`` untimed runs each): the first few dozen convolutions of a
process run at a third of the speed of the later ones. The server computes on the CPU
(``TORCHLAB_DEVICE=cpu``) unless ``--device`` says otherwise; the baseline always does.
``--threads`` sets torch's thread count on both sides (on a small, busy machine OpenMP's
threads wait for each other and one thread can be faster).

    .venv/bin/python bench/vision.py [--format jpeg|png] [--repeats 15] [--warmup 40]
        [--threads N] [--json out.json]
"""

from __future__ import annotations

import base64
import io
import math
import time
from typing import Any

import httpx
import numpy as np
import orjson
import torch
import torch.nn.functional as F  # noqa: N812
from _common import (
    Server,
    base_parser,
    environment,
    print_ratio,
    print_table,
    section,
    summarize,
    write_json,
)
from PIL import Image
from sklearn.datasets import load_sample_images

GOAL = 1.5
KERNELS = ["edge", "random"]
POOL = {"kind": "max", "kernel_size": 2, "stride": 2}


def tutorial_photo(fmt: str) -> bytes:
    """china.jpg as a 512×768 RGB photo file (the tutorial's size)."""
    photo = Image.fromarray(load_sample_images().images[0]).resize((768, 512))
    buffer = io.BytesIO()
    photo.save(buffer, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
    return buffer.getvalue()


def in_process(picture: bytes, seed: int) -> bytes:
    """Decode + weight + conv + pool + encode, as the route does them, without HTTP."""
    with torch.inference_mode():
        image = Image.open(io.BytesIO(picture))
        pixels = np.array(image.convert("L"), dtype=np.uint8)
        x = torch.from_numpy(pixels).to(torch.float32)[None, None]
        generator = torch.Generator().manual_seed(seed)
        bound = math.sqrt(3.0) * (math.sqrt(2.0 / 6.0) / math.sqrt(25))
        weight = torch.empty(2, 1, 5, 5).uniform_(-bound, bound, generator=generator)
        weight[0] = -1.0
        weight[0, 0, 2, 2] = 24.0
        output = F.max_pool2d(F.conv2d(x, weight), 2, 2)

    def wire(tensor: torch.Tensor) -> dict[str, Any]:
        data = base64.b64encode(tensor.contiguous().numpy().tobytes()).decode("ascii")
        return {"shape": list(tensor.shape), "dtype": "float32", "b64": data}

    return orjson.dumps(
        {
            "output": wire(output),
            "weight": wire(weight),
            "bias": None,
            "kernels": KERNELS,
            "input_shape": list(x.shape),
            "conv_shape": [1, 2, 508, 764],
            "device": "cpu",
            "elapsed_ms": 0.0,
        }
    )


def decode_output(content: bytes) -> np.ndarray:
    out = orjson.loads(content)["output"]
    return np.frombuffer(base64.b64decode(out["b64"]), dtype="<f4").reshape(out["shape"])


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=15)
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg", help="upload format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="the server's TORCHLAB_DEVICE (cpu)")
    parser.add_argument(
        "--pause", type=float, default=0.1, help="seconds of quiet before each run (0.1)"
    )
    parser.add_argument(
        "--warmup", type=int, default=40, help="untimed runs of each side first (40)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads on both sides (OMP_NUM_THREADS for the server); default torch's",
    )
    args = parser.parse_args()

    picture = tutorial_photo(args.format)
    fields = {"kernels": orjson.dumps(KERNELS).decode(), "seed": str(args.seed)}
    fields["pool"] = orjson.dumps(POOL).decode()
    print(f"photo 512×768 {args.format}: {len(picture) / 1e3:.1f} kB upload")

    results: dict[str, Any] = {
        "env": environment(),
        "format": args.format,
        "repeats": args.repeats,
        "pause_s": args.pause,
        "warmup": args.warmup,
    }
    env = {"TORCHLAB_DEVICE": args.device}
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    with (
        Server(env=env) as server,
        httpx.Client(base_url=server.url, timeout=120.0) as client,
    ):
        request = client.build_request(
            "POST",
            "/conv",
            params={"encoding": "b64"},
            data=fields,
            files={"image": (f"photo.{args.format}", picture, f"image/{args.format}")},
        )
        body = request.read()
        headers = {"content-type": request.headers["content-type"]}
        url = "/conv?encoding=b64"

        # Correctness once, outside the timed region (also the warm-up of both sides).
        reply = in_process(picture, args.seed)
        check = client.post(url, content=body, headers=headers)
        if check.status_code != 200:
            raise SystemExit(f"HTTP {check.status_code}: {check.text[:500]}")
        served, local = decode_output(check.content), decode_output(reply)
        same_shape = list(served.shape) == [1, 2, 254, 382] == list(local.shape)
        close = same_shape and bool(np.allclose(served, local, rtol=1e-5, atol=1e-3))

        for _ in range(args.warmup):
            in_process(picture, args.seed)
            client.post(url, content=body, headers=headers).read()

        local_times: list[float] = []
        http_times: list[float] = []
        statuses: list[int] = []
        for _ in range(args.repeats):
            time.sleep(args.pause)
            start = time.perf_counter()
            in_process(picture, args.seed)
            local_times.append(time.perf_counter() - start)
            time.sleep(args.pause)
            start = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            response.read()
            http_times.append(time.perf_counter() - start)
            statuses.append(response.status_code)

    results.update(
        {
            "request_bytes": len(body),
            "response_bytes": len(check.content),
            "in_process_response_bytes": len(reply),
            "in_process": summarize(local_times),
            "http": summarize(http_times),
            "server_elapsed_ms": orjson.loads(check.content)["elapsed_ms"],
            "output_shape": list(served.shape),
            "outputs_agree": close,
            "non_200": sum(s != 200 for s in statuses),
        }
    )
    with section(f"results (median of {args.repeats}, milliseconds)"):
        print_table(
            ["req kB", "resp MB", "in-process ms", "HTTP ms", "HTTP min ms", "conv ms", "agree"],
            [
                [
                    f"{len(body) / 1e3:.1f}",
                    f"{len(check.content) / 1e6:.2f}",
                    f"{results['in_process']['median_s'] * 1e3:.1f}",
                    f"{results['http']['median_s'] * 1e3:.1f}",
                    f"{results['http']['min_s'] * 1e3:.1f}",
                    f"{results['server_elapsed_ms']:.2f}",
                    "yes" if close else "NO",
                ]
            ],
        )
    print()
    ratio = results["http"]["median_s"] / results["in_process"]["median_s"]
    results["ratios"] = [print_ratio("conv+pool HTTP / conv+pool in-process", ratio, GOAL, "lower")]
    if not close or results["non_200"]:
        print(f"  WARNING: agree={close} non_200={results['non_200']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
