"""The PyTorch tutorial (``shared/seed/pytorch-tutorial.txt``), every chapter, through torchlab.

Runs each chapter's examples on a torchlab service with the Python client, prints what the
tutorial prints (in English; where the tutorial's printed output is wrong, as the gradient of
its chapter 5, torchlab's right answer), and saves each figure as a PNG::

    make serve                                   # in another terminal
    python examples/tutorial.py                  # figures in ./tutorial-figures
    python examples/tutorial.py http://host:9000 --out figures --quick

The base URL comes from the first argument, else ``$TORCHLAB_URL``, else
``http://127.0.0.1:8000``; an API key from ``$TORCHLAB_API_KEY``. Needs only the client
(``pip install ./clients/python``): numpy and httpx. The sample photo of chapter 6 is
scikit-learn's ``china.jpg`` when scikit-learn and Pillow are installed, else a picture drawn
here; ``--image PATH`` uses your own.

A chapter whose routes the service lacks is reported and skipped; the exit status is then 2
(0 with ``--skip-missing``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torchlab_client as tl

# The tutorial's examDict (chapter 2): hours studied and exam scores of 20 students.
EXAM_HOURS = [
    0.50, 0.75, 1.00, 1.25, 1.50, 1.75, 1.75, 2.00, 2.25, 2.50,
    2.75, 3.00, 3.25, 3.50, 4.00, 4.25, 4.50, 4.75, 5.00, 5.50,
]  # fmt: skip
EXAM_SCORES = [10, 22, 13, 43, 20, 22, 33, 50, 62, 48, 55, 75, 62, 73, 81, 76, 64, 82, 90, 93]


@dataclass
class Context:
    """What every chapter gets: the client, where figures go, and the options."""

    client: tl.Client
    out: Path
    quick: bool
    image: Path | None
    saved: list[Path]
    photo: np.ndarray | None = None

    def save(self, picture: tl.PNGImage, name: str) -> None:
        path = picture.save(self.out / name)
        self.saved.append(path)
        print(f"  [figure] {path} ({picture.width}×{picture.height})")

    def sample_photo(self) -> np.ndarray:
        """The tutorial's grayscale photo: 512 rows × 768 columns, uint8."""
        if self.photo is None:
            self.photo = load_photo(self.image)
        return self.photo


@dataclass(frozen=True)
class Chapter:
    """One chapter: its title, the routes it calls, the figures it saves, and its code."""

    number: str
    title: str
    routes: tuple[str, ...]
    figures: tuple[str, ...]
    run: Callable[[Context], None]


def heading(text: str) -> None:
    print(f"\n=== {text} ===")


def show(label: str, value: Any) -> None:
    """print(label, value) the way the tutorial does, numpy arrays on their own lines."""
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        print(f"{label}\n{value}")
    else:
        print(label, value)


# --- the sample photo -------------------------------------------------------------------------


def load_photo(path: Path | None) -> np.ndarray:
    """A grayscale photo as uint8 [512, 768] (the tutorial's size): ``path``, else
    scikit-learn's china.jpg resized (when scikit-learn and Pillow are installed), else a
    picture drawn with numpy."""
    try:
        from PIL import Image  # noqa: PLC0415 - optional
    except ImportError:
        Image = None  # type: ignore[assignment]  # noqa: N806
    if path is not None:
        if Image is None:
            sys.exit("--image needs Pillow to read the picture (pip install pillow)")
        with Image.open(path) as picture:
            return np.asarray(picture.convert("L").resize((768, 512)))
    if Image is not None:
        try:
            from sklearn.datasets import load_sample_image  # noqa: PLC0415 - optional

            china = Image.fromarray(load_sample_image("china.jpg"))
            return np.asarray(china.convert("L").resize((768, 512)))
        except ImportError:
            pass
    return drawn_photo()


def drawn_photo(height: int = 512, width: int = 768) -> np.ndarray:
    """A photo-like grayscale picture: a sky gradient, a sun, hills and a house."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    picture = 170 + 60 * (1 - rows / height)
    sun = (rows - 110) ** 2 + (cols - 600) ** 2 < 55**2
    picture[sun] = 250
    hills = rows > 330 + 40 * np.sin(cols / 90)
    picture[hills] = 90 + 25 * np.sin(cols[hills] / 23) * np.cos(rows[hills] / 17)
    house = (rows > 260) & (rows < 400) & (cols > 180) & (cols < 340)
    picture[house] = 60
    roof = (rows > 190) & (rows <= 260) & (np.abs(cols - 260) < (rows - 190) * 1.2)
    picture[roof] = 30
    window = (
        (rows > 290)
        & (rows < 340)
        & (((cols > 205) & (cols < 245)) | ((cols > 275) & (cols < 315)))
    )
    picture[window] = 220
    noise = np.random.default_rng(0).normal(0, 4, size=picture.shape)
    photo: np.ndarray = np.clip(picture + noise, 0, 255).astype(np.uint8)
    return photo


# --- chapters ---------------------------------------------------------------------------------


def chapter_1(ctx: Context) -> None:
    """1.2: the matrix multiply on the CPU and, where present, the GPU (twice: the first
    CUDA call is slow)."""
    m, k, n = (1000, 500, 400) if ctx.quick else (10000, 1000, 2000)
    info = ctx.client.info()
    result = ctx.client.benchmark(m, k, n, repeats=2 if ctx.quick else 5, seed=0)
    print(result.torch_version)
    print(result.cuda_available)
    print(f"a = randn({m}, {k}), b = randn({k}, {n}), c = a @ b")
    for timing in result.results:
        # The tutorial prints: device, seconds, c.norm(2).
        print(timing.device, f"{timing.first_run_s:.4f}", f"tensor({timing.norm:.4f})")
        print(
            timing.device,
            f"{timing.median_s:.4f}",
            f"tensor({timing.norm:.4f})",
            f"(median of the warm runs, {timing.gflops:.1f} GFLOP/s on {timing.device_name})",
        )
    if result.max_norm_rel_diff is not None:
        print(f"the devices' norms agree to {result.max_norm_rel_diff:.2e} (relative)")
    print(f"default device of this service: {info.default_device}")


def chapter_2(ctx: Context) -> None:
    """2: linear regression of the exam scores on the hours studied, and the correlation's
    strength (0-0.3 weak, 0.3-0.6 moderate, 0.6-1 strong)."""
    fit = ctx.client.linear_regression(EXAM_HOURS, EXAM_SCORES)
    coef = float(np.ravel(fit.model.coef)[0])
    print(f"score = {coef:.4f} · hours + {float(fit.model.intercept):.4f}")
    print(f"Pearson r = {fit.pearson_r:.4f}: a {fit.correlation} correlation")
    print(f"R² = {fit.metrics['r2']:.4f}, MSE = {fit.metrics['mse']:.4f}")
    same = ctx.client.linear_regression(dataset="exam")
    print(f"the built-in 'exam' dataset gives the same fit: r = {same.pearson_r:.4f}")
    prediction = ctx.client.predict(fit, [1.0, 3.0, 5.0])
    print("predicted scores for 1, 3 and 5 hours:", np.round(prediction.y, 2))
    local = fit.model.predict([1.0, 3.0, 5.0])  # the same numbers, computed here with numpy
    print("the fitted model predicts the same here:", np.allclose(local, prediction.y))
    ctx.save(ctx.client.linear_regression_png(dataset="exam"), "02_exam_regression.png")


def chapter_3(ctx: Context) -> None:
    """3: creating tensors, their types, indexing and slicing, numpy, cat, squeeze,
    unsqueeze, view."""
    c = ctx.client
    out = c.tensor_ops(
        [
            {"op": "eye", "n": 4, "m": 4, "out": "torch_1"},
            {"op": "zeros", "size": [4, 4], "out": "torch_2"},
            {"op": "arange", "end": 16, "out": "torch_3"},
            {"op": "reshape", "x": "torch_3", "shape": [2, 2, -1], "out": "torch_3"},
            {"op": "info", "x": "torch_1", "out": "info_1"},
            {"op": "info", "x": "torch_2", "out": "info_2"},
            {"op": "index", "x": "torch_1", "index": "[2]", "out": "row_2"},
            {"op": "index", "x": "torch_1", "index": "[:, 1]", "out": "column_1"},
            {"op": "index", "x": "torch_3", "index": "[:, 1, :-1]", "out": "slice"},
        ],
        returns=["torch_1", "torch_2", "torch_3", "info_1", "info_2", "row_2", "column_1", "slice"],
    )
    print("3.2 creating tensors")
    show("torch.eye(4, 4) =", out["torch_1"])
    show("torch.zeros(4, 4) =", out["torch_2"])
    show("torch.arange(16).reshape(2, 2, -1) =", out["torch_3"])
    print("3.3 types and shapes")
    print(f"torch_1.shape = {list(out.info['info_1'].shape)}, dtype {out.info['info_1'].dtype}")
    print(f"torch_2.size() = {out.info['info_2']['size']}, dtype {out['torch_2'].dtype}")
    print(f"torch_3 dtype: {out['torch_3'].dtype}")
    print("3.4 indexing and slicing")
    show("torch_1[2] =", out["row_2"])
    show("torch_1[:, 1] =", out["column_1"])
    show("torch_3[:, 1, :-1] =", out["slice"])

    print("3.5 numpy arrays to tensors")
    arr = np.array([[1, 2, 3], [4, 5, 6]])
    torch_4 = c.tensor_ops({"op": "clone", "x": "arr", "out": "torch_4"}, {"arr": arr})["torch_4"]
    show("arr =", arr)
    show(f"torch.from_numpy(arr) ({torch_4.dtype}) =", torch_4)

    print("3.6 common operations")
    # The same steps with the typed builder: tl.ops.<op>(...) takes the service's
    # parameter names (the README's table lists them) and type checkers check them.
    ops = c.tensor_ops(
        [
            tl.ops.arange(8, out="torch_5"),
            tl.ops.reshape("torch_5", [2, 2, 2], out="torch_5"),
            tl.ops.arange(12, out="torch_6"),
            tl.ops.reshape("torch_6", [3, 2, 2], out="torch_6"),
            tl.ops.cat(["torch_5", "torch_6"], dim=0, out="torch_cat"),
            tl.ops.squeeze("torch_6", out="torch_squeeze"),
            tl.ops.unsqueeze("torch_squeeze", 1, out="torch_unsqueeze"),
            tl.ops.view("torch_6", [-1], out="torch_view"),
            tl.ops.reshape("torch_6", [-1], out="torch_reshape"),
        ],
        returns=[
            "torch_5",
            "torch_6",
            "torch_cat",
            "torch_squeeze",
            "torch_unsqueeze",
            "torch_view",
            "torch_reshape",
        ],
    )
    show("torch_5 =", ops["torch_5"])
    show("torch_6 =", ops["torch_6"])
    show("torch.cat((torch_5, torch_6), 0) =", ops["torch_cat"])
    print("torch_squeeze.shape", list(ops["torch_squeeze"].shape))
    print("torch_unsqueeze.shape", list(ops["torch_unsqueeze"].shape))
    print("torch_6.shape", list(ops["torch_6"].shape))
    show("torch_view", ops["torch_view"])
    show("torch_reshape", ops["torch_reshape"])


def chapter_4(ctx: Context) -> None:
    """4: logistic regression: a linear score, the sigmoid into (0, 1), a threshold."""
    c = ctx.client
    ctx.save(c.activate_png("sigmoid", x_range=(-10, 10, 200), columns=1), "04_sigmoid.png")
    passed = [int(score >= 60) for score in EXAM_SCORES]
    # progress=True: a bar of the fit's iterations while it runs (the service streams them).
    fit = c.logistic_regression([[h] for h in EXAM_HOURS], passed, threshold=0.5, progress=True)
    print("step 1: a linear score y = w·hours + b; step 2: w = sigmoid(y) = P(pass);")
    print(f"step 3: pass when P(pass) > threshold = {fit.model.threshold}")
    print(
        f"classes {fit.model.classes}, accuracy on the 20 students: {fit.metrics['accuracy']:.2f}"
    )
    print("confusion matrix (rows: true fail/pass):", fit.metrics["confusion_matrix"])
    hours = [[1.0], [2.5], [4.0]]
    prediction = c.predict(fit, hours)
    assert prediction.proba is not None
    for (h,), label, p in zip(hours, np.ravel(prediction.y), prediction.proba[:, 1], strict=True):
        print(f"{h} hours: P(pass) = {p:.3f} -> {'pass' if label == 1 else 'fail'}")
    ctx.save(
        c.logistic_regression_png([[h] for h in EXAM_HOURS], passed), "04_logistic_regression.png"
    )


def chapter_5(ctx: Context) -> None:
    """5: autograd of y = sum(x² + 2x + 1) at x = [[1], [2], [3], [4]]."""
    x = np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    value, grads = ctx.client.grad("sum(x**2 + 2*x + 1)", inputs={"x": x})
    print("x.requires_grad: True")
    print("y.requires_grad: True")
    show("x:", x)
    print("y:", float(value))
    show("x.grad (dy/dx = 2x + 2):", grads["x"])
    print("(the tutorial prints [[4, 6], [8, 10]]; the gradient has x's shape [4, 1])")


def chapter_6_1(ctx: Context) -> None:
    """6.1: convolution of the grayscale photo with the edge kernel and a random one."""
    photo = ctx.sample_photo()
    print("the photo:", list(photo.shape), "->", [1, 1, *photo.shape])
    result = ctx.client.conv(photo, kernels=["edge", "random"], kernel_size=5, seed=0)
    print("input shape:", list(result.input_shape or ()))
    print("size after the convolution:", list(result.output.squeeze().shape))
    print("kernels:", result.kernels)
    assert result.weight is not None
    show("the edge kernel:", result.weight[0, 0])
    ctx.save(
        ctx.client.conv_png(photo, kernels=["edge", "random"], kernel_size=5, seed=0),
        "06_1_convolution.png",
    )


def chapter_6_2(ctx: Context) -> None:
    """6.2: max pooling (2, stride 2) of the feature maps, then adaptive average pooling."""
    photo = ctx.sample_photo()
    conv = ctx.client.conv(photo, kernels=["edge", "random"], kernel_size=5, seed=0)
    pooled = ctx.client.pool(input=conv.output, kind="max", kernel_size=2, stride=2)
    print("max pooling 2×2, stride 2:", list(pooled.output.squeeze().shape))
    adaptive = ctx.client.pool(input=conv.output, kind="adaptive_avg", output_size=[64, 96])
    print("adaptive average pooling to 64×96:", list(adaptive.output.squeeze().shape))
    ctx.save(
        ctx.client.pool_png(input=conv.output, kind="max", kernel_size=2, stride=2),
        "06_2_max_pooling.png",
    )
    ctx.save(
        ctx.client.pool_png(input=conv.output, kind="adaptive_avg", output_size=[64, 96]),
        "06_2_adaptive_avg_pooling.png",
    )


def chapter_6_3(ctx: Context) -> None:
    """6.3: Sigmoid, Tanh, ReLU and Softplus on linspace(-6, 6, 100), as four panels."""
    functions = ["sigmoid", "tanh", "relu", "softplus"]
    results = ctx.client.activate(functions, x_range=(-6, 6, 100), derivative=True)
    listing = {f.name: f for f in ctx.client.list_activations().functions}
    for result in results:
        i = int(np.argmin(np.abs(result.x)))
        assert result.dydx is not None
        print(
            f"{listing[result.function].nn_class:8} {listing[result.function].formula:40} "
            f"range {listing[result.function].output_range:10} "
            f"f({result.x[i]:.2f}) = {result.y[i]:.4f}, f' = {result.dydx[i]:.4f}"
        )
    ctx.save(ctx.client.activate_png(functions, x_range=(-6, 6, 100)), "06_3_activations.png")


def chapter_6_4(ctx: Context) -> None:
    """6.4: the recurrent layers: an Elman RNN (tanh, then relu), an LSTM and a GRU."""
    x = np.random.default_rng(0).standard_normal((5, 3, 10)).astype(np.float32)
    print("input: a sequence of 5 steps, batch of 3, 10 features")
    for mode, nonlinearity in (("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("gru", None)):
        result = ctx.client.rnn(
            x, 20, mode=mode, num_layers=2, nonlinearity=nonlinearity, seed=0, return_weights=False
        )
        name = f"{mode.upper()}({nonlinearity})" if nonlinearity else mode.upper()
        extra = f", c_n {list(result.c_n.shape)}" if result.c_n is not None else ""
        print(f"{name:10} output {list(result.output.shape)}, h_n {list(result.h_n.shape)}{extra}")
    print("parameters of the 2-layer RNN:")
    for parameter, shape in ctx.client.rnn(x, 20, num_layers=2, seed=0).parameters.items():
        print(f"  {parameter}: {list(shape)}")


def chapter_6_5(ctx: Context) -> None:
    """6.5: a fully connected layer, nn.Linear(in_features=20, out_features=30)."""
    x = np.random.default_rng(0).standard_normal((128, 20)).astype(np.float32)
    result = ctx.client.linear_layer(x, 20, 30, seed=0)
    print("input (N, in_features):", list(x.shape))
    print("output (N, out_features):", list(result.output.shape))
    print(
        "weight:",
        list(result.weight.shape),
        "bias:",
        None if result.bias is None else list(result.bias.shape),
    )
    without = ctx.client.linear_layer(x, 20, 30, bias=False, seed=0)
    print("with bias=False the layer has no bias:", without.bias is None)


def chapter_7_1(ctx: Context) -> None:
    """7.1: regression data (diabetes, for the removed Boston housing) and classification
    data (iris) through TensorDataset and DataLoader."""
    info = {d.name: d for d in ctx.client.datasets()}
    diabetes = info["diabetes"]
    print(
        f"diabetes: {diabetes.n_samples} samples × {diabetes.n_features} features ({diabetes.task})"
    )
    print("the tutorial's boston_X.dtype / boston_Y.dtype: float64 -> converted to float32")
    loader = ctx.client.data_loader(
        "diabetes", task="regression", batch_size=64, shuffle=True, seed=0
    )
    batch = loader.batches[0]
    print("b_x.shape:", list(batch.x_shape))
    print("b_y.shape:", list(batch.y_shape or ()))
    print("b_x.dtype:", loader.x_dtype)
    print("b_y.dtype:", loader.y_dtype)

    iris = info["iris"]
    print(
        f"iris: {iris.n_samples} samples × {iris.n_features} features, classes {iris.class_names}"
    )
    # max_batches="all": the whole epoch (the service lists one batch unless asked).
    loader = ctx.client.data_loader(
        "iris",
        task="classification",
        batch_size=10,
        shuffle=True,
        seed=0,
        include_data=True,
        max_batches="all",
    )
    batch = loader.batches[0]
    print("b_x.shape:", list(batch.x_shape))
    print("b_y.shape:", list(batch.y_shape or ()))
    print("b_x.dtype:", loader.x_dtype)
    print("b_y.dtype:", loader.y_dtype)
    show("b_y:", batch.y)
    print(f"classes {loader.classes}: {loader.class_names}")
    seen = sum(len(b.indices or ()) for b in loader)
    print(f"one pass (epoch) has {loader.n_batches} batches of 10, {seen} samples in all")


def chapter_7_2(ctx: Context) -> None:
    """7.2: image data and torchvision transforms: a built-in dataset, and a folder of
    pictures in ImageFolder layout."""
    transforms: list[dict[str, Any]] = [
        {"name": "ToImage"},
        {"name": "ToDtype", "dtype": "float32", "scale": True},
        {"name": "Normalize", "mean": [0.5], "std": [0.5]},
    ]
    digits = ctx.client.images(
        dataset="digits", transforms=transforms, batch_size=16, shuffle=True, seed=0
    )
    print(f"digits: {digits.n_images} pictures, classes {digits.classes}")
    assert digits.batch is not None
    print(
        "first batch:",
        list(digits.batch.x_shape),
        digits.batch.x_dtype,
        "labels",
        list(digits.batch.y_shape or ()),
        digits.batch.y_dtype,
    )
    print("per-channel mean", np.round(digits.mean or [], 4), "std", np.round(digits.std or [], 4))
    ctx.save(
        ctx.client.images_png(
            dataset="digits", transforms=transforms[:2], batch_size=32, shuffle=True, seed=0
        ),
        "07_2_digits.png",
    )

    photo = ctx.sample_photo()
    with tempfile.TemporaryDirectory() as folder:
        # An ImageFolder: class "left" and class "right", crops of the photo.
        for name, part in (("left", photo[:, :384]), ("right", photo[:, 384:])):
            (Path(folder) / name).mkdir()
            for i in range(3):
                crop = part[i * 128 : i * 128 + 256, i * 64 : i * 64 + 256]
                (Path(folder) / name / f"{i}.png").write_bytes(tl.encode_png(crop))
        folder_transforms: list[dict[str, Any]] = [
            {"name": "Resize", "size": [64, 64]},
            {"name": "RandomHorizontalFlip", "p": 0.5},
            {"name": "ToImage"},
            {"name": "ToDtype", "dtype": "float32", "scale": True},
        ]
        result = ctx.client.images(
            archive=folder, mode="L", transforms=folder_transforms, batch_size=4, seed=0
        )
        print(f"the folder: classes {result.class_to_idx}, counts {result.counts}")
        assert result.batch is not None
        print("first batch:", list(result.batch.x_shape), result.batch.x_dtype)
        ctx.save(
            ctx.client.images_png(
                archive=folder, mode="L", transforms=folder_transforms, batch_size=6, seed=0
            ),
            "07_2_image_folder.png",
        )


CHAPTERS = (
    Chapter(
        "1.2", "GPU test: the matrix multiply benchmark", ("/info", "/benchmark"), (), chapter_1
    ),
    Chapter(
        "2",
        "Linear regression: exam scores",
        ("/regress/linear", "/regress/predict"),
        ("02_exam_regression.png",),
        chapter_2,
    ),
    Chapter("3", "Tensor basics", ("/tensor/ops",), (), chapter_3),
    Chapter(
        "4",
        "Logistic regression",
        ("/activate", "/regress/logistic", "/regress/predict"),
        ("04_sigmoid.png", "04_logistic_regression.png"),
        chapter_4,
    ),
    Chapter("5", "Automatic differentiation", ("/grad",), (), chapter_5),
    Chapter("6.1", "Convolution", ("/conv",), ("06_1_convolution.png",), chapter_6_1),
    Chapter(
        "6.2",
        "Pooling",
        ("/conv", "/pool"),
        ("06_2_max_pooling.png", "06_2_adaptive_avg_pooling.png"),
        chapter_6_2,
    ),
    Chapter("6.3", "Activation functions", ("/activate",), ("06_3_activations.png",), chapter_6_3),
    Chapter("6.4", "Recurrent layers", ("/layers/rnn",), (), chapter_6_4),
    Chapter("6.5", "Fully connected layer", ("/layers/linear",), (), chapter_6_5),
    Chapter("7.1", "Tabular data and DataLoader", ("/datasets", "/data/loader"), (), chapter_7_1),
    Chapter(
        "7.2",
        "Image data and transforms",
        ("/data/images",),
        ("07_2_digits.png", "07_2_image_folder.png"),
        chapter_7_2,
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", nargs="?", default=os.environ.get("TORCHLAB_URL"))
    parser.add_argument(
        "--out", type=Path, default=Path("tutorial-figures"), help="figures go here"
    )
    parser.add_argument("--quick", action="store_true", help="a smaller benchmark (for CI)")
    parser.add_argument("--image", type=Path, help="your own photo for chapter 6 (needs Pillow)")
    parser.add_argument(
        "--skip-missing", action="store_true", help="exit 0 when the service lacks some routes"
    )
    parser.add_argument("--chapters", nargs="*", help="only these chapters, e.g. 3 5 6.1")
    args = parser.parse_args(argv)

    with tl.Client(args.base_url, timeout=300.0) as client:
        paths = set(client.openapi()["paths"])
        ctx = Context(client, args.out, args.quick, args.image, saved=[])
        print(f"torchlab at {client.base_url}, figures in {args.out}/")
        skipped = []
        for chapter in CHAPTERS:
            if args.chapters and chapter.number not in args.chapters:
                continue
            heading(f"{chapter.number} {chapter.title}")
            missing = [route for route in chapter.routes if route not in paths]
            if missing:
                print(f"  [skipped: this service has no {', '.join(missing)}]")
                skipped.append(chapter.number)
                continue
            start = time.perf_counter()
            chapter.run(ctx)
            print(f"  ({time.perf_counter() - start:.2f} s)")
    print(f"\n{len(ctx.saved)} figures saved in {args.out}/")
    if skipped:
        print(f"chapters skipped (routes missing): {', '.join(skipped)}")
        return 0 if args.skip_missing else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
