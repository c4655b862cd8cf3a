"""Sets of labelled pictures: scikit-learn's bundled images as scikit-learn loads them,
uploaded files with their labels, and zips in ImageFolder layout; each picture charged."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from service.errors import InvalidInput, LimitExceeded
from service.ops.data.image_sets import (
    IMAGE_DATASETS,
    ImageSet,
    archive_images,
    builtin_images,
    uploaded_images,
)
from tests.unit.ops.data.helpers import budget, limits, make_zip, pixels, png


def test_the_built_in_sets_are_the_schemas() -> None:
    assert IMAGE_DATASETS == ("digits", "sample_images")


def test_digits_are_sklearns_scaled_to_bytes() -> None:
    digits = load_digits()
    spent = budget()
    image_set = builtin_images("digits", None, spent)
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)
    assert len(image_set.images) == len(expected)
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in image_set.images]), expected)
    assert all(image.mode == "L" for image in image_set.images)
    assert image_set.targets == digits.target.tolist()
    assert image_set.classes == [str(d) for d in range(10)]
    counts = np.bincount(digits.target, minlength=10)
    assert image_set.counts() == {str(d): int(counts[d]) for d in range(10)}
    assert spent.elements == expected.size


def test_digits_in_rgb_and_cut_short() -> None:
    spent = budget()
    image_set = builtin_images("digits", "RGB", spent, max_images=5)
    first = np.rint(load_digits().images[0] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(image_set.images[0]), np.stack([first] * 3, axis=-1))
    assert len(image_set.images) == 5
    assert spent.elements == 5 * 3 * 8 * 8


def test_sample_images_are_the_two_photos() -> None:
    photos = load_sample_images()
    image_set = builtin_images("sample_images", None, budget())
    assert image_set.classes == ["china", "flower"]
    assert image_set.class_to_idx == {"china": 0, "flower": 1}
    assert image_set.targets == [0, 1]
    for image, expected in zip(image_set.images, photos.images, strict=True):
        np.testing.assert_array_equal(np.asarray(image), expected)
    gray = builtin_images("sample_images", "L", budget(), max_images=1)
    assert gray.classes == ["china"]
    expected_gray = Image.fromarray(photos.images[0]).convert("L")
    np.testing.assert_array_equal(np.asarray(gray.images[0]), np.asarray(expected_gray))


def test_a_set_over_the_elements_limit_is_refused_while_charged() -> None:
    photo_elements = 427 * 640 * 3
    with pytest.raises(LimitExceeded) as info:
        builtin_images("sample_images", None, budget(max_total_elements=photo_elements))
    assert info.value.limit == "max_total_elements"


def test_unknown_set() -> None:
    with pytest.raises(InvalidInput) as info:
        builtin_images("imagenet", None, budget())
    assert info.value.code == "unknown_dataset"


def test_uploads_are_sorted_into_their_labels_classes() -> None:
    pictures = [pixels(6, 4, seed=i) for i in range(3)]
    files = [(f"{i}.png", png(p)) for i, p in enumerate(pictures)]
    spent = budget()
    image_set = uploaded_images(files, ["zebra", "ant", "zebra"], "RGB", limits(), spent)
    assert image_set.classes == ["ant", "zebra"]
    assert image_set.targets == [1, 0, 1]
    for image, expected in zip(image_set.images, pictures, strict=True):
        np.testing.assert_array_equal(np.asarray(image), expected)
    assert spent.elements == 3 * 6 * 4 * 3
    gray = uploaded_images(files[:1], None, "L", limits(), budget())
    assert gray.classes == ["images"]
    expected_gray = Image.fromarray(pictures[0]).convert("L")
    np.testing.assert_array_equal(np.asarray(gray.images[0]), np.asarray(expected_gray))


def test_one_label_per_upload() -> None:
    with pytest.raises(InvalidInput) as info:
        uploaded_images([("a.png", png(pixels(2, 2)))], ["a", "b"], "RGB", limits(), budget())
    assert info.value.code == "shape_mismatch"


def test_the_pixel_limit_is_the_configured_one() -> None:
    files = [("big.png", png(pixels(20, 20)))]
    with pytest.raises(LimitExceeded) as info:
        uploaded_images(files, None, "RGB", limits(max_image_pixels=399), budget())
    assert info.value.limit == "max_image_pixels"
    assert info.value.details["requested"] == 400


FOLDER = {
    "dog/b.png": pixels(5, 5, seed=1),
    "dog/a.png": pixels(5, 5, seed=2),
    "cat/z.png": pixels(5, 5, seed=3),
    "cat/x.png": pixels(5, 5, seed=4),
}


@pytest.mark.parametrize("root", ["", "pets/"])
def test_an_imagefolder_archive(root: str) -> None:
    entries = {root + name: png(p) for name, p in FOLDER.items()}
    entries[root + "README.txt"] = b"class folders"
    image_set = archive_images(make_zip(entries), "RGB", limits(), budget())
    order = sorted(FOLDER)  # ImageFolder: by class, then by path
    assert image_set.classes == ["cat", "dog"]
    assert image_set.targets == [0, 0, 1, 1]
    for image, name in zip(image_set.images, order, strict=True):
        np.testing.assert_array_equal(np.asarray(image), FOLDER[name])
    assert image_set.skipped == [root + "README.txt"]
    assert image_set.source == "archive"
    first = archive_images(make_zip(entries), "RGB", limits(), budget(), max_images=3)
    assert first.targets == [0, 0, 1]


def test_an_archive_without_pictures() -> None:
    with pytest.raises(InvalidInput) as info:
        archive_images(make_zip({"a.png": b"outside"}), "RGB", limits(), budget())
    assert info.value.code == "empty_archive"
    assert info.value.details["skipped"] == ["a.png"]
    # Entry names are the caller's: the error quotes a bounded part of them.
    many = {f"{'n' * 5000}{i}.txt": b"x" for i in range(200)}
    with pytest.raises(InvalidInput) as info:
        archive_images(make_zip(many), "RGB", limits(), budget())
    assert info.value.details["n_skipped"] == 200
    assert len(orjson.dumps(info.value.details)) < 2048


def test_counts_of_an_empty_class() -> None:
    image_set = ImageSet([], [], ["a", "b"], "images")
    assert image_set.counts() == {"a": 0, "b": 0}


def test_pictures_made_one_by_one_are_charged_first() -> None:
    spent = budget()
    builtin_images("digits", None, spent, max_images=100)
    assert spent.objects == 100
    start = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        builtin_images("digits", None, budget(max_objects=1000))
    assert info.value.code == "objects_limit" and info.value.details["requested"] == 1797
    assert time.perf_counter() - start < 0.5
    entries = {f"c{i % 3}/{i}.png": png(pixels(2, 2, seed=i)) for i in range(6)}
    entries["notes.txt"] = b"skipped"
    archived = budget()
    archive_images(make_zip(entries), "RGB", limits(), archived)
    assert archived.objects == 6 + 1
