"""Image datasets and ``torchvision.transforms.v2`` (tutorial chapter 7.2): sets of labelled
pictures from scikit-learn's bundled images, uploaded files or a zip in ``ImageFolder``
layout; an allow-listed transform pipeline applied under a seed; a ``DataLoader`` batch and
per-channel statistics.

Zip archives are read in memory, never extracted: every entry's name, kind and declared
size are checked against :class:`ArchiveLimits` from the central directory before one byte
is decompressed, and decompression counts what it produces (a declared size that lies is
cut off and refused). A bomb is a 413 after reading the directory.

Every picture's size after the pipeline is predicted from the transforms' parameters
(:func:`predict_shape`) and charged to the request's :class:`Budget` before any transform
runs; what the pipeline actually produced is checked again.

torchvision is imported on first use (it takes seconds), not with the app.
"""

from __future__ import annotations

import functools
import inspect
import io
import math
import os
import posixpath
import stat
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import torch
from PIL import Image

from schemas.images import TransformName
from service.codec import parse_dtype
from service.errors import ErrorCode, InvalidInput, LimitExceeded, OpError, UnsupportedMediaType
from service.limits import Budget, Deadline
from service.ops.vision.imageio import (
    IMAGE_EXTENSIONS,
    ImageMode,
    decode_image,
)

TRANSFORMS: tuple[str, ...] = get_args(TransformName)
"""The ``torchvision.transforms.v2`` classes a pipeline may use (the schema names them)."""
DEFAULT_TRANSFORMS: tuple[dict[str, Any], ...] = (
    {"name": "ToImage"},
    {"name": "ToDtype", "dtype": "float32", "scale": True},
)
"""The pipeline when none is given: the classic ``ToTensor()``, float32 in [0, 1]."""
MAX_TRANSFORM_SIDE = 1 << 16
"""Largest size, padding or kernel size a transform parameter may name."""
BUILTIN_SETS = ("digits", "sample_images")
CPU = torch.device("cpu")

# Rough FLOPs per output element of one transform: resampling ones read several inputs.
_RESAMPLING = {
    "Resize",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomAffine",
    "RandomPerspective",
}
_SIZE_PARAMS = {"size", "max_size", "padding", "kernel_size"}
_DIRECTORY_RECORD = b"PK\x01\x02"
"""The signature of a zip's central directory record, one per entry."""
# What torchvision raises for parameter values it does not take.
_TORCHVISION_ERRORS = (
    TypeError,
    ValueError,
    RuntimeError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
)

# torchvision's random transforms draw from torch's global generator: one pipeline at a time
# runs under a forked, seeded generator state, so that requests never share random draws.
_RNG_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArchiveLimits:
    """What a zip may hold: checked from its directory before anything is decompressed."""

    max_entries: int = 10_000
    max_entry_bytes: int = 32 << 20
    max_total_bytes: int = 256 << 20


@dataclass
class ImageSet:
    """Labelled pictures, decoded, in ``ImageFolder``'s order."""

    images: list[Image.Image]
    targets: list[int]
    classes: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.classes)}

    def counts(self) -> dict[str, int]:
        found = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        return {name: int(found[i]) for i, name in enumerate(self.classes)}


# --- sources ---------------------------------------------------------------------------------


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # noqa: PLC0415 (scikit-learn imports slowly)

    bunch = load_digits()
    # 0–16 gray levels as 8-bit pixels: 16 is white.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    pixels.setflags(write=False)
    return pixels, bunch.target.astype(np.int64)


@functools.cache
def _sample_images() -> tuple[tuple[str, np.ndarray], ...]:
    from sklearn.datasets import load_sample_images  # noqa: PLC0415

    bunch = load_sample_images()
    names = [os.path.splitext(os.path.basename(path))[0] for path in bunch.filenames]
    return tuple(zip(names, bunch.images, strict=True))


def builtin_images(
    name: str, mode: ImageMode | None, budget: Budget, max_images: int | None = None
) -> ImageSet:
    """``digits``: scikit-learn's 1797 8×8 digits as grayscale pictures (0–16 scaled to
    0–255), classes ``"0"``–``"9"``. ``sample_images``: its two photos, ``china`` and
    ``flower`` (427×640 RGB), one class each."""
    if name == "digits":
        pixels, target = _digits()
        count = len(pixels) if max_images is None else min(max_images, len(pixels))
        images = []
        for index in range(count):
            image = Image.fromarray(pixels[index], "L")
            images.append(image if mode in (None, "L") else image.convert(mode))
            budget.charge_tensor(_channels(images[-1]) * 64, f"digits image {index}")
        return ImageSet(
            images, [int(t) for t in target[:count]], [str(d) for d in range(10)], "digits"
        )
    if name == "sample_images":
        photos = _sample_images()[: max_images or None]
        images = []
        for photo_name, array in photos:
            image = Image.fromarray(array, "RGB")
            images.append(image if mode in (None, "RGB") else image.convert(mode))
            budget.charge_tensor(
                _channels(images[-1]) * array.shape[0] * array.shape[1], photo_name
            )
        classes = [photo_name for photo_name, _ in photos]
        return ImageSet(images, list(range(len(photos))), classes, "sample_images")
    raise InvalidInput(
        f"unknown image dataset {name!r}; built in: {', '.join(BUILTIN_SETS)}",
        code=ErrorCode.UNKNOWN_DATASET,
        details={"allowed": list(BUILTIN_SETS)},
    )


def _channels(image: Image.Image) -> int:
    return len(image.getbands())


def _decoded(data: bytes, mode: ImageMode, where: str, budget: Budget) -> Image.Image:
    pixels = decode_image(data, mode, where, max_elements=budget.max_elements)
    budget.charge_tensor(int(pixels.size), where)
    return Image.fromarray(pixels, mode)


def uploaded_images(
    files: Sequence[tuple[str, bytes]],
    labels: Sequence[str] | None,
    mode: ImageMode,
    budget: Budget,
    deadline: Deadline | None = None,
) -> ImageSet:
    """Pictures given one by one, with a class each from ``labels`` (sorted into indices as
    ``ImageFolder`` sorts folders) or all in the class ``"images"``."""
    if labels is not None and len(labels) != len(files):
        raise InvalidInput(
            f"labels has {len(labels)} entries for {len(files)} image(s); give one class "
            "name per image",
            code=ErrorCode.SHAPE_MISMATCH,
            details={"labels": len(labels), "images": len(files)},
        )
    names = list(labels) if labels is not None else ["images"] * len(files)
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    images = []
    for number, (filename, data) in enumerate(files):
        if deadline is not None:
            deadline.check()
        where = f"images[{number}]" + (f" ({filename[:100]})" if filename else "")
        images.append(_decoded(data, mode, where, budget))
    return ImageSet(images, [index[name] for name in names], classes, "images")


def _unsafe(name: str, reason: str) -> InvalidInput:
    return InvalidInput(
        f"archive entry {name[:200]!r} refused: {reason}",
        code=ErrorCode.UNSAFE_ARCHIVE_ENTRY,
        details={"entry": name[:200], "reason": reason},
    )


def _entry_path(info: zipfile.ZipInfo) -> str:
    """The entry's name as a safe relative path, or a 422 ``unsafe_archive_entry``."""
    name = info.filename
    if "\x00" in name:
        raise _unsafe(name, "a NUL character in the name")
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise _unsafe(name, "an absolute path")
    if ".." in path.split("/"):
        raise _unsafe(name, "a '..' component (path traversal)")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _unsafe(name, "a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(name, "not a regular file")
    if info.flag_bits & 0x1:
        raise _unsafe(name, "encrypted")
    return posixpath.normpath(path)


def read_archive(
    data: bytes, limits: ArchiveLimits, deadline: Deadline | None = None
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The picture entries of a zip ``(path, bytes)`` in name order, and the names skipped
    (not a picture by extension, hidden, or outside a class folder).

    Before decompressing anything: more than ``max_entries`` entries, an entry declared
    larger than ``max_entry_bytes`` or a total declared over ``max_total_bytes`` is a 413;
    ``..``, absolute names, links and encrypted entries are a 422. While decompressing, an
    entry that yields more than it declared is a 413 (and a corrupt one a 422).
    """
    # Before zipfile builds an object per directory record: a 64 MiB body of tiny entries
    # holds a million of them. Every record starts with this signature, so the count is an
    # upper bound of the entries (it can only over-count, by chance bytes in file data).
    records = data.count(_DIRECTORY_RECORD)
    if records > limits.max_entries:
        raise LimitExceeded(
            "max_archive_entries", limits.max_entries, records, "the archive's entries"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise UnsupportedMediaType(
            f"archive: not a zip archive ({exc})",
            code=ErrorCode.UNSUPPORTED_ARCHIVE,
            details={"expected": "a zip archive in ImageFolder layout: class/file.png"},
        ) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise LimitExceeded(
                "max_archive_entries", limits.max_entries, len(infos), "the archive's entries"
            )
        total = 0
        wanted: list[tuple[str, zipfile.ZipInfo]] = []
        skipped: list[str] = []
        for info in infos:
            path = _entry_path(info)
            if info.is_dir() or path.endswith("/"):
                continue
            if info.file_size > limits.max_entry_bytes:
                raise LimitExceeded(
                    "max_archive_entry_bytes",
                    limits.max_entry_bytes,
                    info.file_size,
                    f"archive entry {path[:200]!r} uncompressed",
                )
            total += info.file_size
            if total > limits.max_total_bytes:
                raise LimitExceeded(
                    "max_archive_bytes",
                    limits.max_total_bytes,
                    total,
                    "the archive's entries uncompressed",
                )
            parts = path.split("/")
            hidden = any(part.startswith(".") or part == "__MACOSX" for part in parts)
            if hidden or not path.lower().endswith(IMAGE_EXTENSIONS) or len(parts) < 2:
                skipped.append(path)
                continue
            wanted.append((path, info))
        entries = []
        for path, info in sorted(wanted, key=lambda item: item[0]):
            if deadline is not None:
                deadline.check()
            entries.append((path, _read_entry(archive, info, path, limits)))
    return entries, skipped


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, limits: ArchiveLimits
) -> bytes:
    allowed = min(info.file_size, limits.max_entry_bytes)
    chunks = []
    produced = 0
    try:
        with archive.open(info) as stream:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                produced += len(chunk)
                if produced > allowed:
                    raise LimitExceeded(
                        "max_archive_entry_bytes",
                        allowed,
                        produced,
                        f"archive entry {path[:200]!r} (more than it declared)",
                    )
                chunks.append(chunk)
    except LimitExceeded:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        NotImplementedError,
        ValueError,
    ) as exc:
        raise InvalidInput(
            f"archive entry {path[:200]!r} cannot be read: {exc}",
            code=ErrorCode.CORRUPT_ARCHIVE,
            details={"entry": path[:200]},
        ) from exc
    return b"".join(chunks)


def archive_images(
    data: bytes,
    mode: ImageMode,
    budget: Budget,
    *,
    limits: ArchiveLimits | None = None,
    max_images: int | None = None,
    deadline: Deadline | None = None,
) -> ImageSet:
    """An ``ImageFolder``: one class per folder (sorted), ``class/file.png``. When every
    entry sits in one top folder with class folders inside (``root/class/file.png``), that
    folder is the root. Files outside a class folder and non-pictures are skipped and
    listed; an archive without pictures is a 422 ``empty_archive``. ``max_images`` keeps the
    first pictures in ``ImageFolder``'s order (by class, then path)."""
    entries, skipped = read_archive(data, limits or ArchiveLimits(), deadline)
    if not entries:
        raise InvalidInput(
            "archive: no pictures in class folders (expected class/file.png with "
            f"{', '.join(IMAGE_EXTENSIONS)})",
            code=ErrorCode.EMPTY_ARCHIVE,
            details={"skipped": skipped[:100]},
        )
    paths = [path.split("/") for path, _ in entries]
    tops = {parts[0] for parts in paths}
    strip = 1 if len(tops) == 1 and all(len(parts) >= 3 for parts in paths) else 0
    names = [parts[strip] for parts in paths]
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    order = sorted(range(len(entries)), key=lambda i: (index[names[i]], entries[i][0]))
    if max_images is not None:
        order = order[:max_images]
    images = []
    for i in order:
        if deadline is not None:
            deadline.check()
        path, content = entries[i]
        images.append(_decoded(content, mode, f"archive entry {path[:200]!r}", budget))
    return ImageSet(images, [index[names[i]] for i in order], classes, "archive", skipped)


# --- transforms -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltTransform:
    """A constructed transform and how it was asked for."""

    name: str
    params: dict[str, Any]
    transform: Any

    @property
    def label(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name}({shown})"


def _bad_param(where: str, message: str, code: ErrorCode, **details: object) -> InvalidInput:
    return InvalidInput(f"{where}: {message}", code=code, details=dict(details))


def _check_sizes(name: str, value: object, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and (item > MAX_TRANSFORM_SIDE or item < 0)
        ):
            raise _bad_param(
                where,
                f"{name} must be between 0 and {MAX_TRANSFORM_SIDE}, got {item}",
                ErrorCode.INVALID_PARAM,
                param=name,
            )


def build_transform(spec: Mapping[str, Any], index: int) -> BuiltTransform:
    """One allow-listed ``torchvision.transforms.v2`` class with ``spec``'s parameters,
    checked against its signature: an unknown name is a 422 ``unknown_param``, a required
    one left out ``missing_param``, a value torchvision refuses ``invalid_param``."""
    from torchvision.transforms import v2  # noqa: PLC0415 (torchvision imports in seconds)

    name = spec.get("name")
    where = f"transforms[{index}]"
    if name not in TRANSFORMS:
        raise _bad_param(
            where,
            f"unknown transform {str(name)[:64]!r}; allowed: {', '.join(TRANSFORMS)}",
            ErrorCode.UNKNOWN_TRANSFORM,
            allowed=list(TRANSFORMS),
        )
    cls = getattr(v2, name)
    signature = inspect.signature(cls)
    accepted = {
        key: param
        for key, param in signature.parameters.items()
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }
    params = {key: value for key, value in spec.items() if key != "name"}
    for key in params:
        if key not in accepted:
            takes = ", ".join(accepted) or "no parameters"
            raise _bad_param(
                where,
                f"{name} has no parameter {key[:64]!r}; it takes {takes}",
                ErrorCode.UNKNOWN_PARAM,
                param=key[:64],
                allowed=list(accepted),
            )
    for key, param in accepted.items():
        if param.default is inspect.Parameter.empty and key not in params:
            raise _bad_param(
                where,
                f"{name} needs the parameter {key!r} (torchvision has no default for it)",
                ErrorCode.MISSING_PARAM,
                param=key,
            )
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in _SIZE_PARAMS:
            _check_sizes(key, value, where)
        if key == "dtype":
            kwargs[key] = parse_dtype(value, f"{where}.dtype")
        elif key == "inplace":
            kwargs[key] = False  # the source pictures are shared; never modify them
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        transform = cls(**kwargs)
    except _TORCHVISION_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad_param(
            where, f"{name}: {message}", ErrorCode.INVALID_PARAM, transform=name
        ) from exc
    return BuiltTransform(name, params, transform)


def build_pipeline(specs: Sequence[Mapping[str, Any]] | None) -> list[BuiltTransform]:
    """The transforms of a request, in order; :data:`DEFAULT_TRANSFORMS` for ``None``."""
    chosen = DEFAULT_TRANSFORMS if specs is None else specs
    return [build_transform(spec, index) for index, spec in enumerate(chosen)]


def _pad_sides(padding: Any) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of torchvision's padding forms."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    values = [int(v) for v in padding]
    if len(values) == 1:
        return values[0], values[0], values[0], values[0]
    if len(values) == 2:
        return values[0], values[1], values[0], values[1]
    return values[0], values[1], values[2], values[3]


def _resized(height: int, width: int, size: Any, max_size: int | None) -> tuple[int, int]:
    """torchvision's Resize output size (``size`` a list of one or two, or ``None``)."""
    if size is not None and len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = min(height, width), max(height, width)
    if size is None:
        new_short, new_long = int((max_size or long) * short / max(long, 1)), max_size or long
    else:
        new_short = int(size[0])
        new_long = int(new_short * long / max(short, 1))
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if height > width else (new_short, new_long)


def predict_shape(
    step: BuiltTransform, shape: tuple[int, int, int]
) -> tuple[tuple[int, int, int], int]:
    """``(C, H, W)`` after ``step`` (an upper bound for the random ones), and the largest
    intermediate it allocates, in elements."""
    c, h, w = shape
    t = step.transform
    name = step.name
    out = shape
    peak = c * h * w
    if name == "Resize":
        out = (c, *_resized(h, w, t.size, t.max_size))
    elif name in ("CenterCrop", "RandomResizedCrop"):
        out = (c, int(t.size[0]), int(t.size[1]))
    elif name == "RandomCrop":
        left, top, right, bottom = _pad_sides(t.padding) if t.padding else (0, 0, 0, 0)
        padded = (h + top + bottom, w + left + right)
        if t.pad_if_needed:
            padded = (max(padded[0], int(t.size[0])), max(padded[1], int(t.size[1])))
        peak = max(peak, c * padded[0] * padded[1])
        out = (c, int(t.size[0]), int(t.size[1]))
    elif name == "Pad":
        left, top, right, bottom = _pad_sides(t.padding)
        out = (c, h + top + bottom, w + left + right)
    elif name == "RandomRotation" and t.expand:
        side = math.ceil(math.hypot(h, w)) + 1
        out = (c, side, side)
    elif name == "Grayscale":
        out = (int(t.num_output_channels), h, w)
    numel = out[0] * out[1] * out[2]
    return out, max(peak, numel)


def transform_flops(step: BuiltTransform, numel: int) -> float:
    """Rough FLOPs of one transform producing ``numel`` elements."""
    if step.name == "GaussianBlur":
        kh, kw = (int(k) for k in step.transform.kernel_size)
        return float(numel) * 2 * (kh + kw)
    if step.name in _RESAMPLING:
        return float(numel) * 32
    return float(numel) * 4


def _size_of(image: Image.Image) -> tuple[int, int, int]:
    return _channels(image), image.height, image.width


def plan_pipeline(
    images: Sequence[Image.Image], pipeline: Sequence[BuiltTransform], budget: Budget
) -> None:
    """Charge every picture's predicted output and the pipeline's FLOPs; a 413 when one
    picture, any intermediate or the whole set would be over the limits."""
    cache: dict[tuple[int, int, int], tuple[int, float, int]] = {}
    for number, image in enumerate(images):
        start = _size_of(image)
        if start not in cache:
            shape, peak, flops = start, math.prod(start), 0.0
            for index, step in enumerate(pipeline):
                try:
                    shape, step_peak = predict_shape(step, shape)
                except _TORCHVISION_ERRORS as exc:
                    raise _bad_param(
                        f"transforms[{index}]",
                        f"{step.name}: unusable parameters {step.params!r}"[:300],
                        ErrorCode.INVALID_PARAM,
                        transform=step.name,
                    ) from exc
                if min(shape) < 0:
                    raise _bad_param(
                        f"transforms[{index}]",
                        f"{step.name} would make a picture of shape {list(shape)}",
                        ErrorCode.INVALID_PARAM,
                        transform=step.name,
                    )
                peak = max(peak, step_peak)
                flops += transform_flops(step, math.prod(shape))
            cache[start] = (math.prod(shape), flops, peak)
        numel, flops, peak = cache[start]
        if peak > budget.max_elements:
            raise LimitExceeded(
                "max_elements", budget.max_elements, peak, f"the transforms of picture {number}"
            )
        budget.charge_tensor(numel, f"picture {number} after the transforms")
        budget.charge_flops(flops, f"the transforms of picture {number}")


def apply_pipeline(
    images: Sequence[Image.Image],
    pipeline: Sequence[BuiltTransform],
    *,
    seed: int | None,
    max_elements: int,
    deadline: Deadline | None = None,
) -> list[torch.Tensor]:
    """Each picture through the pipeline, in order, under ``torch.manual_seed(seed)`` (a
    forked generator state: the server's own is untouched). A result still a PIL image
    becomes a uint8 tensor (``ToImage``). torchvision's refusals are 422
    ``transform_failed``."""
    from torchvision.transforms import v2  # noqa: PLC0415

    to_image = v2.ToImage()
    results: list[torch.Tensor] = []
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        # The CPU generator only: torch.manual_seed would reseed every CUDA device too.
        torch.default_generator.manual_seed(
            seed if seed is not None else int.from_bytes(os.urandom(7), "little")
        )
        for number, image in enumerate(images):
            if deadline is not None:
                deadline.check()
            value: Any = image
            for index, step in enumerate(pipeline):
                value = _run_step(step, index, value)
            if isinstance(value, Image.Image):
                value = to_image(value)
            if not isinstance(value, torch.Tensor):
                raise OpError(
                    f"the transforms turned picture {number} into {type(value).__name__}, "
                    "not an image",
                    code=ErrorCode.TRANSFORM_FAILED,
                )
            tensor = value.as_subclass(torch.Tensor)
            if tensor.numel() > max_elements:
                raise LimitExceeded(
                    "max_elements", max_elements, tensor.numel(), f"picture {number} transformed"
                )
            results.append(tensor)
    return results


def _run_step(step: BuiltTransform, index: int, value: Any) -> Any:
    try:
        return step.transform(value)
    except torch.OutOfMemoryError:
        raise
    except _TORCHVISION_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpError(
            f"transforms[{index}] {step.name}: {message}",
            code=ErrorCode.TRANSFORM_FAILED,
            details={"transform": step.name, "index": index},
        ) from exc


# --- statistics and batches ------------------------------------------------------------------


def channel_stats(
    tensors: Sequence[torch.Tensor], device: torch.device | None = None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (``torch.std``: unbiased) over every pixel of
    every picture, on the values as they are, in float64. Pictures must agree in channels."""
    channels = {int(t.shape[0]) for t in tensors}
    if len(channels) != 1:
        raise InvalidInput(
            f"the pictures have different channel counts {sorted(channels)} after the "
            "transforms; add Grayscale, or choose one mode",
            code=ErrorCode.CHANNEL_MISMATCH,
            details={"channels": sorted(channels)},
        )
    (count,) = channels
    flat = torch.cat(
        [t.to(device=device or CPU, dtype=torch.float64).reshape(count, -1) for t in tensors], dim=1
    )
    mean = flat.mean(dim=1)
    std = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros_like(mean)
    return mean.cpu().tolist(), std.cpu().tolist()


@dataclass(frozen=True)
class Batch:
    """The first batch of a ``DataLoader`` and how many there are."""

    x: torch.Tensor
    y: torch.Tensor
    n_batches: int


def first_batch(
    tensors: Sequence[torch.Tensor],
    targets: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    seed: int | None = None,
) -> Batch:
    """``next(iter(DataLoader(dataset, batch_size, shuffle, drop_last, generator)))``, the
    sampler seeded by ``seed``. Pictures of different sizes in one batch are a 422."""
    from torch.utils.data import DataLoader  # noqa: PLC0415

    dataset = list(zip(tensors, targets, strict=True))
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    loader: DataLoader[Any] = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
    )
    n_batches = len(loader)
    if n_batches == 0:
        raise InvalidInput(
            f"drop_last with batch_size {batch_size} leaves no batch of {len(dataset)} picture(s)",
            code=ErrorCode.EMPTY_BATCH,
        )
    try:
        x, y = next(iter(loader))
    except RuntimeError as exc:
        sizes = sorted({tuple(int(s) for s in t.shape) for t in tensors})[:5]
        raise InvalidInput(
            f"the pictures of the first batch differ in size ({exc}); add a Resize or "
            "CenterCrop transform so that they agree, or use batch_size 1",
            code=ErrorCode.SIZE_MISMATCH,
            details={"shapes": [list(s) for s in sizes]},
        ) from exc
    return Batch(x, y, n_batches)


def class_labels(classes: Sequence[str], targets: torch.Tensor) -> list[str]:
    """The class name of each target (for the grid's labels)."""
    return [classes[int(t)] for t in targets.tolist()]
