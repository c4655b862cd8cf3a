"""``POST /data/images``: image datasets through ``torchvision.transforms.v2`` and a
``DataLoader`` (tutorial chapter 7.2).

The pictures come from scikit-learn's bundled images (`digits`, `sample_images`), from
uploaded files (`images`) or from a zip in `ImageFolder` layout (`archive`); nothing is
downloaded.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import (
    ComputeRequest,
    ComputeResponse,
    Int,
    Rule,
    StrictModel,
    TensorOut,
    not_together,
    one_given,
)
from schemas.vision import FILE_BASE64_PATTERN, MAX_BASE64_CHARS

MAX_IMAGES = 256
"""Pictures one request may upload (`images`)."""
MAX_TRANSFORMS = 16
"""Transforms in one pipeline, at most."""
MAX_TRANSFORM_PARAMS = 16
DEFAULT_GRID_COLUMNS = 8
"""Pictures per row of the PNG grid when `columns` is not given (``make_grid``'s ``nrow``)."""

ImageDatasetName = Literal["digits", "sample_images"]
"""The built-in sets of pictures."""

TransformName = Literal[
    "Resize",
    "CenterCrop",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "RandomRotation",
    "RandomAffine",
    "RandomPerspective",
    "ColorJitter",
    "Grayscale",
    "RandomGrayscale",
    "RandomInvert",
    "GaussianBlur",
    "Pad",
    "Normalize",
    "RandomErasing",
    "ToImage",
    "ToDtype",
]
"""The allowed ``torchvision.transforms.v2`` classes."""

TransformParam = (
    bool
    | Int
    | float
    | Annotated[str, Field(max_length=64)]
    | Annotated[list[Int | float], Field(max_length=16)]
    | None
)

Base64Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_BASE64_CHARS,
        json_schema_extra={"pattern": FILE_BASE64_PATTERN},
    ),
]
ClassName = Annotated[str, Field(min_length=1, max_length=128)]


class TransformSpec(StrictModel):
    """One transform: `name` and the class's own parameters by torchvision's names, e.g.
    `{"name": "Resize", "size": [64, 64]}`, `{"name": "ToDtype", "dtype": "float32",
    "scale": true}`, `{"name": "Normalize", "mean": [0.5], "std": [0.5]}`.

    Parameters are checked against the class's signature: an unknown one is a 422
    `unknown_param`, a required one left out `missing_param`, a value torchvision refuses
    `invalid_param`. Values are numbers, booleans, strings (`interpolation: "bicubic"`,
    `padding_mode`, a dtype name for `ToDtype`), null, or lists of numbers. Sizes, paddings
    and kernel sizes are at most 65536; what a picture becomes is charged to the element
    limit before any transform runs. `inplace` is always false.
    """

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={"maxProperties": MAX_TRANSFORM_PARAMS + 1},
    )
    __pydantic_extra__: dict[str, TransformParam] = Field(init=False)

    name: TransformName = Field(
        description="The `torchvision.transforms.v2` class.", examples=["Resize"]
    )

    @model_validator(mode="after")
    def _few_params(self) -> TransformSpec:
        if len(self.model_extra or {}) > MAX_TRANSFORM_PARAMS:
            raise ValueError(f"a transform takes at most {MAX_TRANSFORM_PARAMS} parameters")
        return self


_DIGITS_EXAMPLE: dict[str, Any] = {
    "dataset": "digits",
    "transforms": [
        {"name": "ToImage"},
        {"name": "ToDtype", "dtype": "float32", "scale": True},
        {"name": "Normalize", "mean": [0.5], "std": [0.5]},
    ],
    "batch_size": 16,
    "shuffle": True,
    "seed": 0,
}


class DataImagesRequest(ComputeRequest):
    """A set of labelled pictures, a transform pipeline applied to each under `seed`, and a
    `DataLoader` over the result: the classes, the counts, the first batch's shape and dtype,
    and per-channel mean and std (or, with `"format": "png"`, a grid of the first batch).

    Give exactly one source: `dataset`, `images` (base64 in JSON, or uploaded files in the
    multipart field `images`) or `archive` (base64 in JSON, or an uploaded file in the
    multipart field `archive`).
    """

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        one_given("dataset", "images", "archive"),
        not_together("dataset", "images", "archive"),
        not_together("labels", "dataset"),
        not_together("labels", "archive"),
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                _DIGITS_EXAMPLE,
                {
                    "dataset": "sample_images",
                    "transforms": [
                        {"name": "Resize", "size": [64, 96]},
                        {"name": "RandomHorizontalFlip", "p": 0.5},
                        {"name": "ToImage"},
                        {"name": "ToDtype", "dtype": "float32", "scale": True},
                    ],
                    "batch_size": 2,
                    "seed": 0,
                },
                {"dataset": "digits", "max_images": 32, "format": "png", "seed": 0},
            ]
        }
    }

    dataset: ImageDatasetName | None = Field(
        default=None,
        description="A built-in set: `digits` — scikit-learn's 1797 handwritten digits, "
        "8×8 grayscale (its 0–16 levels scaled to 0–255), classes `0`–`9`; "
        "`sample_images` — its two photos, `china` and `flower`, 427×640 RGB, one class each.",
        examples=["digits"],
    )
    images: (
        Annotated[list[Base64Text], Field(min_length=1, max_length=MAX_IMAGES, fail_fast=True)]
        | None
    ) = Field(
        default=None,
        description="Pictures as base64 text (PNG, JPEG, BMP, GIF, WebP or TIFF), in the "
        "class `images` unless `labels` names one per picture. In a multipart request, "
        "upload the files in the `images` field instead. Each is checked like `/conv`'s "
        "`image`: 413 over the pixel limit, 415 not a picture, 422 truncated.",
    )
    labels: (
        Annotated[list[ClassName], Field(min_length=1, max_length=MAX_IMAGES, fail_fast=True)]
        | None
    ) = Field(
        default=None,
        description="The class name of each picture of `images`, in order; the class "
        "indices follow the names' sorted order, as `ImageFolder`'s do.",
        examples=[["cat", "dog"]],
    )
    archive: Base64Text | None = Field(
        default=None,
        description="A zip in `ImageFolder` layout, `class_name/file.png` (or "
        "`root/class_name/file.png`), as base64; in a multipart request, upload it in the "
        "`archive` field instead. Read in memory, never extracted. Before anything is "
        "decompressed: more than 10000 entries, an entry over 32 MiB or 256 MiB in all "
        "(uncompressed, as declared and as counted) is a 413; names with `..`, absolute "
        "paths, links and encrypted entries are a 422 `unsafe_archive_entry`; not a zip is "
        "a 415. Entries that are not pictures by their extension, hidden ones (`.*`, "
        "`__MACOSX`) and files outside a class folder are skipped and listed in `skipped`; a "
        "picture entry that does not decode is an error, like an upload.",
    )
    mode: Literal["L", "RGB"] | None = Field(
        default=None,
        description="What each picture is decoded to before the transforms: `L` grayscale "
        "or `RGB`. Default: `L` for `digits`, `RGB` for everything else (as `ImageFolder` "
        "loads).",
    )
    transforms: Annotated[list[TransformSpec], Field(max_length=MAX_TRANSFORMS)] | None = Field(
        default=None,
        description="The pipeline, applied in order to each picture (a PIL image in the "
        "chosen mode) under `seed`. Default `[ToImage, ToDtype(float32, scale=True)]` "
        "(float32 in [0, 1], as the classic `ToTensor`); `[]` leaves uint8 tensors. A result "
        "that is still a PIL image becomes a uint8 tensor. Allowed: Resize, CenterCrop, "
        "RandomCrop, RandomResizedCrop, RandomHorizontalFlip, RandomVerticalFlip, "
        "RandomRotation, RandomAffine, RandomPerspective, ColorJitter, Grayscale, "
        "RandomGrayscale, RandomInvert, GaussianBlur, Pad, Normalize, RandomErasing, "
        "ToImage, ToDtype. A transform torchvision refuses at run time (Normalize of a PIL "
        "image or of uint8) is a 422 `transform_failed`.",
        examples=[[{"name": "Resize", "size": [32, 32]}, {"name": "ToImage"}]],
    )
    batch_size: Int = Field(
        default=16, ge=1, le=4096, description="The DataLoader's batch size.", examples=[16]
    )
    shuffle: bool = Field(
        default=False, description="Shuffle the DataLoader's order (seeded by `seed`)."
    )
    drop_last: bool = Field(
        default=False, description="Drop the last incomplete batch (the DataLoader's)."
    )
    max_images: Int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Use only the first pictures of the set (in its order), at most this "
        "many; default all.",
        examples=[100],
    )
    include_data: bool = Field(
        default=False,
        description="Also return the first batch's tensors `x` and `y` (`?encoding=b64` for "
        "compact raw bytes).",
    )
    format: Literal["json", "png"] = Field(
        default="json",
        description="`json`: the description of the set. `png`: "
        "`torchvision.utils.make_grid` of the first batch (scaled to 0–1 over the batch, "
        "`columns` per row, padding 2), each picture enlarged by a whole factor to at least "
        "64 pixels (nearest neighbour, at most 16×) under a 20-pixel strip with its class "
        "name.",
    )
    columns: Int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=f"Pictures per row of the PNG grid; default {DEFAULT_GRID_COLUMNS}.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataImagesRequest:
        given = [
            name for name in ("dataset", "images", "archive") if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give one source of pictures, not {' and '.join(given)}")
        if self.labels is not None and self.dataset is not None:
            raise ValueError("labels name the classes of `images`, not of a dataset")
        if self.labels is not None and self.archive is not None:
            raise ValueError("labels name the classes of `images`; an archive's are its folders")
        return self


class ImageBatch(BaseModel):
    """The first batch of the DataLoader."""

    x_shape: list[int] = Field(
        description="[B, C, H, W] of the pictures.", examples=[[16, 1, 8, 8]]
    )
    x_dtype: str = Field(description="Their dtype.", examples=["float32"])
    y_shape: list[int] = Field(description="[B] of the class indices.", examples=[[16]])
    y_dtype: str = Field(description="Their dtype (int64).", examples=["int64"])
    targets: list[int] = Field(description="The class index of each picture of the batch.")
    x: TensorOut | None = Field(
        default=None, description="The pictures, with `include_data`; else null."
    )
    y: TensorOut | None = Field(
        default=None, description="The class indices, with `include_data`; else null."
    )


class DataImagesResponse(ComputeResponse):
    """The set after the transforms, and the first batch of its DataLoader."""

    source: str = Field(
        description="`digits`, `sample_images`, `images` or `archive`.", examples=["digits"]
    )
    n_images: int = Field(description="Pictures in the set.", examples=[1797])
    classes: list[str] = Field(
        description="Class names in index order.", examples=[["0", "1", "2"]]
    )
    class_to_idx: dict[str, int] = Field(
        description="Each class name's index (`ImageFolder.class_to_idx`).",
        examples=[{"0": 0, "1": 1}],
    )
    counts: dict[str, int] = Field(
        description="Pictures per class.", examples=[{"0": 178, "1": 182}]
    )
    skipped: list[str] = Field(
        description="Archive entries skipped (not pictures by extension, hidden, or outside "
        "a class folder); the first 100.",
        examples=[["README.txt"]],
    )
    n_skipped: int = Field(description="How many entries were skipped.", examples=[1])
    transforms: list[str] = Field(
        description="The pipeline as applied, one `Name(params)` per transform.",
        examples=[["ToImage()", "ToDtype(dtype='float32', scale=True)"]],
    )
    image_shape: list[int] | None = Field(
        description="[C, H, W] of every picture after the transforms when they agree; null "
        "when they differ.",
        examples=[[1, 8, 8]],
    )
    batch_size: int = Field(description="The DataLoader's batch size.", examples=[16])
    n_batches: int = Field(description="Batches in one epoch (`len(loader)`).", examples=[113])
    batch: ImageBatch = Field(description="The first batch.")
    mean: list[float] = Field(
        description="Per-channel mean over every pixel of the set after the transforms, on "
        "the values as they are (0–255 for uint8, 0–1 after `ToDtype(float32, scale=True)`): "
        "what `Normalize` wants.",
        examples=[[0.3]],
    )
    std: list[float] = Field(
        description="Per-channel standard deviation likewise (`torch.std`, unbiased).",
        examples=[[0.38]],
    )
