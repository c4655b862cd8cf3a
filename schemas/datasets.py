"""``GET /datasets`` and ``POST /data/loader``, and the data every fit and the loader read.

Data comes from one of three places: a built-in `dataset` (shipped with the installed
packages, nothing is downloaded), `x` and `y` tensors, or an uploaded CSV (the multipart
field `file`, with a header row; `target` names the label column).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator

from schemas.common import (
    ComputeRequest,
    ComputeResponse,
    Int,
    Rule,
    Tensor,
    TensorOut,
    given,
    needs,
    not_together,
    one_given,
    tensor_schema,
    whole_shape,
)


class Samples(Tensor):
    """One value or one row of features per sample: [n_samples] or [n_samples, n_features],
    finite."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(tensor_schema(range(1, 3), finite=True, null_dtype=False, title="Samples")),
    ]


_LABELS_SCHEMA = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "description": "Class labels as text, one per sample.",
}


class Targets(Tensor):
    """One target (or one row of targets) per sample, or a list of class labels as text."""

    root: Annotated[
        Any,
        BeforeValidator(whole_shape),
        WithJsonSchema(
            {
                "title": "Targets",
                "anyOf": [
                    _LABELS_SCHEMA,
                    tensor_schema(range(1, 3), finite=True, null_dtype=False),
                ],
            }
        ),
    ]


DatasetName = Literal["exam", "iris", "diabetes", "wine", "breast_cancer", "digits", "linnerud"]
"""The built-in tabular datasets (``sample_images``, an image dataset, is for ``/data/images``)."""

DatasetTask = Literal["regression", "classification", "images"]
Task = Literal["regression", "classification"]

CSV_FIELD = "file"
"""The multipart field of an uploaded CSV."""
MAX_SELECTED_FEATURES = 100_000
MAX_NAME_LENGTH = 200
MAX_LOADER_BATCH = 2**31 - 1
MAX_LISTED_BATCHES = 1000

ColumnName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_LENGTH, description="A column (feature) name."),
]

_DATASET_DOC = (
    "A built-in dataset (see `GET /datasets`): `exam` (the tutorial's 20 study-hours/score "
    "pairs, chapter 2), scikit-learn's `iris`, `diabetes` (standing in for the tutorial's "
    "Boston housing, which scikit-learn removed), `wine`, `breast_cancer`, `digits`, "
    "`linnerud`. Give this, or `x` (with `y`), or upload a CSV as `file`."
)
_X_DOC = (
    "The features, [n_samples, n_features], or [n_samples] for one feature (the tutorial's "
    "list of hours). Nested lists are read as float64, so decimals keep their precision; "
    "integer and boolean values become float64. Columns are named `x0`, `x1`, …; NaN and "
    "infinities are a 422."
)
_Y_DOC = (
    "The targets, one per sample: [n_samples] (or [n_samples, n_targets] for several "
    "regression targets). Class labels may be integers or strings (a list of strings); "
    "regression targets are read as float64."
)
_TARGET_DOC = (
    "With an uploaded CSV: the column holding the targets (default: the last column); every "
    "other column is a feature. With `linnerud` (three targets): the one to use (`Weight`, "
    "`Waist` or `Pulse`; default all three). Not with `x`/`y` (a 422)."
)
_FEATURES_DOC = (
    "The feature columns to use, by name and in this order, each once (default: all of "
    "them). Names are the dataset's (`GET /datasets`), the CSV header's, or `x0`, `x1`, … "
    "for `x`."
)


class DataRequest(ComputeRequest):
    """Where the data comes from: a built-in `dataset`, `x`/`y`, or an uploaded CSV (one of
    the three)."""

    # `file` is the multipart upload: never a JSON field, so in JSON these read as if it
    # were not named, and a form's rules are the same ones.
    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        one_given("dataset", "x", CSV_FIELD),
        not_together("dataset", "x", CSV_FIELD),
        not_together("dataset", "y"),
        not_together("x", "target"),
        needs("y", given("x")),
    )

    dataset: DatasetName | None = Field(default=None, description=_DATASET_DOC, examples=["exam"])
    x: Samples | None = Field(default=None, description=_X_DOC, examples=[[0.5, 1.0, 1.5]])
    y: Targets | None = Field(default=None, description=_Y_DOC, examples=[[10.0, 13.0, 20.0]])
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description=_TARGET_DOC,
        examples=["score"],
    )
    features: list[ColumnName] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SELECTED_FEATURES,
        fail_fast=True,
        json_schema_extra={"uniqueItems": True},
        description=_FEATURES_DOC,
        examples=[["petal length (cm)", "petal width (cm)"]],
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataRequest:
        if self.dataset is not None and (self.x is not None or self.y is not None):
            raise ValueError("give `dataset` or `x`/`y`, not both")
        if self.y is not None and self.x is None:
            raise ValueError("`y` needs `x`")
        return self


# --- GET /datasets ---------------------------------------------------------------------------


class DatasetInfo(BaseModel):
    """One built-in dataset."""

    name: str = Field(description="The name to pass as `dataset`.", examples=["iris"])
    task: DatasetTask = Field(
        description="What the targets are for: `regression` (numbers), `classification` "
        "(class labels) or `images` (pictures, for `POST /data/images`).",
        examples=["classification"],
    )
    n_samples: int = Field(description="Number of samples (rows or pictures).", examples=[150])
    n_features: int | None = Field(
        description="Number of feature columns; null for an image dataset.", examples=[4]
    )
    feature_names: list[str] = Field(
        description="The feature columns' names, in order (empty for an image dataset).",
        examples=[["sepal length (cm)", "sepal width (cm)"]],
    )
    target_names: list[str] = Field(
        description="The target columns' names (several for `linnerud`; empty for an image "
        "dataset).",
        examples=[["species"]],
    )
    classes: list[int] | None = Field(
        description="The class labels (the integers in the target column) of a "
        "classification dataset; null otherwise.",
        examples=[[0, 1, 2]],
    )
    class_names: list[str] | None = Field(
        description="What each class label means, in the order of `classes`; null otherwise.",
        examples=[["setosa", "versicolor", "virginica"]],
    )
    image_shape: list[int] | None = Field(
        description="[height, width] or [height, width, channels] of each picture, for "
        "datasets of pictures (`digits`, `sample_images`); null otherwise.",
        examples=[[8, 8]],
    )
    description: str = Field(
        description="What the data is.", examples=["Fisher's iris flowers: 3 species."]
    )
    source: str = Field(description="Where it comes from.", examples=["sklearn.datasets.load_iris"])


class DatasetsResponse(BaseModel):
    """Every built-in dataset."""

    datasets: list[DatasetInfo] = Field(description="The datasets, by name.")


# --- POST /data/loader -----------------------------------------------------------------------

LOADER_EXAMPLE: dict[str, Any] = {
    "dataset": "iris",
    "task": "classification",
    "batch_size": 10,
    "shuffle": True,
    "seed": 0,
}


class DataLoaderRequest(DataRequest):
    """The tutorial's chapter 7.1: `torch.utils.data.TensorDataset(x, y)` and a
    `DataLoader` over it.

    Features become float32 tensors; targets float32 for `regression` and int64 for
    `classification`, as the tutorial converts them. With `shuffle`, the order is drawn from
    a `torch.Generator` seeded with `seed`: the same batches as
    `DataLoader(..., shuffle=True, generator=torch.Generator().manual_seed(seed))`.
    """

    model_config = {
        "json_schema_extra": {
            "examples": [
                LOADER_EXAMPLE,
                {"dataset": "diabetes", "task": "regression", "batch_size": 64, "shuffle": True},
                {
                    "x": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
                    "y": ["a", "b", "a"],
                    "batch_size": 2,
                    "include_data": True,
                },
            ]
        }
    }

    task: Task | None = Field(
        default=None,
        description="`regression`: targets as float32. `classification`: targets as int64 "
        "(integer labels as they are; string labels as indices into `classes`). Default: the "
        "dataset's task; for `x`/`y` and CSV data, classification when the labels are "
        "strings or an integer tensor, regression otherwise.",
        examples=["classification"],
    )
    batch_size: Int = Field(
        default=1,
        ge=1,
        le=MAX_LOADER_BATCH,
        description="Samples per batch (DataLoader's default: 1).",
        examples=[10],
    )
    shuffle: bool = Field(
        default=False, description="Draw a new order of the samples (seeded by `seed`)."
    )
    drop_last: bool = Field(
        default=False,
        description="Drop the last batch when it is smaller than `batch_size`.",
    )
    max_batches: Int = Field(
        default=1,
        ge=1,
        le=MAX_LISTED_BATCHES,
        description="How many batches to take from the loader and describe (from the first).",
        examples=[1],
    )
    include_data: bool = Field(
        default=False,
        description="Also return each listed batch's tensors (`x`, `y`) and sample indices.",
    )


class LoaderBatch(BaseModel):
    """One batch as the DataLoader yields it."""

    index: int = Field(description="The batch's position, from 0.", examples=[0])
    x_shape: list[int] = Field(description="Shape of the batch's features.", examples=[[10, 4]])
    y_shape: list[int] | None = Field(
        description="Shape of the batch's targets; null when there are none.", examples=[[10]]
    )
    x: TensorOut | None = Field(
        default=None, description="The features (with `include_data`), float32."
    )
    y: TensorOut | None = Field(
        default=None, description="The targets (with `include_data`), float32 or int64."
    )
    indices: list[int] | None = Field(
        default=None,
        description="Which samples (rows, from 0) the batch holds, in order (with `include_data`).",
        examples=[[3, 17, 0]],
    )


class DataLoaderResponse(ComputeResponse):
    """What the DataLoader holds and yields."""

    dataset: str = Field(
        description="The data's name: the built-in dataset's, `x` for tensors, or the "
        "uploaded file's name.",
        examples=["iris"],
    )
    task: Task = Field(description="How the targets were converted.", examples=["classification"])
    n_samples: int = Field(description="Samples in the TensorDataset.", examples=[150])
    n_features: int = Field(description="Features of each sample.", examples=[4])
    features: list[str] = Field(
        description="The feature columns, in order.", examples=[["sepal length (cm)"]]
    )
    targets: list[str] = Field(
        description="The target column(s); empty when there are none.", examples=[["species"]]
    )
    classes: list[int] | list[str] | None = Field(
        description="With string labels: the label of each class index (y holds indices). "
        "Null otherwise.",
        examples=[["a", "b"]],
    )
    x_dtype: str = Field(description="dtype of the features.", examples=["float32"])
    y_dtype: str | None = Field(
        description="dtype of the targets: float32 (regression) or int64 (classification); "
        "null when there are none.",
        examples=["int64"],
    )
    batch_size: int = Field(description="Samples per batch.", examples=[10])
    n_batches: int = Field(
        description="len(DataLoader): batches in one pass (one epoch).", examples=[15]
    )
    batches: list[LoaderBatch] = Field(
        description="The first `max_batches` batches (fewer when the loader has fewer)."
    )
