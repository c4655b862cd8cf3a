"""Sets of labelled pictures for ``POST /data/images``: scikit-learn's bundled images, files
given one by one with a class each, or a zip in ``ImageFolder`` layout. Every picture is
decoded under the pixel and element limits and charged to the request's budget."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
from PIL import Image

from schemas.images import ImageDatasetName
from service.config import Limits
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.data.archives import read_archive
from service.ops.data.table import listed_names
from service.ops.vision.imageio import IMAGE_EXTENSIONS, ImageMode, decode_image

IMAGE_DATASETS: tuple[str, ...] = get_args(ImageDatasetName)
"""The built-in sets of pictures (the schema names them)."""
DIGITS_SIDE = 8
"""scikit-learn's digits are 8×8 pictures."""


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
        """How many pictures each class holds."""
        found = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        return {name: int(found[i]) for i, name in enumerate(self.classes)}


@functools.cache
def digit_pixels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as read-only uint8 pictures [1797, 8, 8] and their digits."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 (scikit-learn imports slowly)

    bunch = load_digits()
    # 0–16 gray levels as 8-bit pixels: 16 is white.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    pixels.setflags(write=False)
    return pixels, bunch.target.astype(np.int64)


@functools.cache
def sample_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """scikit-learn's sample photographs by name (``china``, ``flower``), [H, W, 3] uint8."""
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
        pixels, target = digit_pixels()
        count = len(pixels) if max_images is None else min(max_images, len(pixels))
        budget.charge_objects(count, f"{count:,} digits pictures")
        images = []
        for index in range(count):
            image = Image.fromarray(pixels[index], "L")
            images.append(image if mode in (None, "L") else image.convert(mode))
            budget.charge_tensor(_channels(images[-1]) * DIGITS_SIDE**2, f"digits image {index}")
        return ImageSet(
            images, [int(t) for t in target[:count]], [str(d) for d in range(10)], "digits"
        )
    if name == "sample_images":
        photos = sample_photos()[: max_images or None]
        budget.charge_objects(len(photos), "the sample photos")
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
        f"unknown image dataset {name!r}; built in: {', '.join(IMAGE_DATASETS)}",
        code=ErrorCode.UNKNOWN_DATASET,
        details={"allowed": list(IMAGE_DATASETS)},
    )


def _channels(image: Image.Image) -> int:
    return len(image.getbands())


def _decoded(
    data: bytes, mode: ImageMode, where: str, limits: Limits, budget: Budget
) -> Image.Image:
    pixels = decode_image(
        data, mode, where, max_elements=budget.max_elements, max_pixels=limits.max_image_pixels
    )
    budget.charge_tensor(int(pixels.size), where)
    return Image.fromarray(pixels, mode)


def uploaded_images(
    files: Sequence[tuple[str, bytes]],
    labels: Sequence[str] | None,
    mode: ImageMode,
    limits: Limits,
    budget: Budget,
    *,
    deadline: Deadline | None = None,
) -> ImageSet:
    """Pictures given one by one ``(filename, bytes)``, with a class each from ``labels``
    (sorted into indices as ``ImageFolder`` sorts folders) or all in the class
    ``"images"``."""
    if labels is not None and len(labels) != len(files):
        raise InvalidInput(
            f"labels has {len(labels)} entries for {len(files)} image(s); give one class "
            "name per image",
            code=ErrorCode.SHAPE_MISMATCH,
            details={"labels": len(labels), "images": len(files)},
        )
    budget.charge_objects(len(files), f"{len(files):,} uploaded pictures")
    names = list(labels) if labels is not None else ["images"] * len(files)
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    images = []
    for number, (filename, data) in enumerate(files):
        if deadline is not None:
            deadline.check()
        where = f"images[{number}]" + (f" ({filename[:100]})" if filename else "")
        images.append(_decoded(data, mode, where, limits, budget))
    return ImageSet(images, [index[name] for name in names], classes, "images")


def archive_images(
    data: bytes,
    mode: ImageMode,
    limits: Limits,
    budget: Budget,
    *,
    max_images: int | None = None,
    deadline: Deadline | None = None,
) -> ImageSet:
    """An ``ImageFolder``: one class per folder (sorted), ``class/file.png``. When every
    entry sits in one top folder with class folders inside (``root/class/file.png``), that
    folder is the root. Files outside a class folder and non-pictures are skipped and
    listed; an archive without pictures is a 422 ``empty_archive``. ``max_images`` keeps the
    first pictures in ``ImageFolder``'s order (by class, then path)."""
    entries, skipped = read_archive(data, limits, deadline)
    budget.charge_objects(len(entries) + len(skipped), f"{len(entries):,} archive entries")
    if not entries:
        raise InvalidInput(
            "archive: no pictures in class folders (expected class/file.png with "
            f"{', '.join(IMAGE_EXTENSIONS)})",
            code=ErrorCode.EMPTY_ARCHIVE,
            details={"skipped": listed_names(skipped), "n_skipped": len(skipped)},
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
        images.append(_decoded(content, mode, f"archive entry {path[:200]!r}", limits, budget))
    return ImageSet(images, [index[names[i]] for i in order], classes, "archive", skipped)
