"""``POST /data/loader`` and ``POST /data/images`` without HTTP: the request loaded and
planned against the limits (every refusal there), then run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from schemas.datasets import DataLoaderRequest, Task
from schemas.images import DEFAULT_GRID_COLUMNS, DataImagesRequest
from service.codec import DTYPE_NAMES
from service.config import Limits
from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline
from service.ops.context import ComputeContext
from service.ops.data.batches import (
    channel_stats,
    charge_batches,
    check_grid,
    class_labels,
    first_batch,
)
from service.ops.data.image_sets import (
    ImageSet,
    archive_images,
    builtin_images,
    uploaded_images,
)
from service.ops.data.loader import (
    charge_description,
    charge_loader,
    load_batches,
    loader_task,
    loader_tensors,
    tensor_dataset,
)
from service.ops.data.tables import Upload, load_table
from service.ops.data.transforms import (
    BuiltTransform,
    apply_pipeline,
    build_pipeline,
    plan_pipeline,
    predicts_exactly,
)
from service.ops.render.images import batch_grid_png, grid_layout
from service.ops.render.png import Png, panel_headers
from service.ops.vision.imageio import decode_base64

# --- POST /data/loader -----------------------------------------------------------------------


@dataclass
class DataLoaderPlan:
    """A table as a ``TensorDataset``, charged to the budget, and how to batch it."""

    dataset: TensorDataset
    description: dict[str, Any]
    batch_size: int
    shuffle: bool
    drop_last: bool
    seed: int | None
    max_batches: int
    include_data: bool


def prepare_data_loader(
    ctx: ComputeContext, body: DataLoaderRequest, upload: Upload | None
) -> DataLoaderPlan:
    """Load the request's table, convert it for its task and charge the loader's work."""
    budget = ctx.budget
    table = load_table(
        ctx.limits, body, upload, text_target=body.task != "regression", budget=budget
    )
    task: Task = loader_task(body.task, table)
    tensors = loader_tensors(table, task, budget)
    charge_loader(
        tensors,
        budget,
        batch_size=body.batch_size,
        max_batches=body.max_batches,
        include_data=body.include_data,
        shuffle=body.shuffle,
    )
    targets = len(table.target_names) if tensors.y is not None else 0
    classes = None if tensors.classes is None else len(tensors.classes)
    charge_description(budget, table.n_features, targets, classes)
    description = {
        "dataset": table.name,
        "task": task,
        "n_samples": table.n_samples,
        "n_features": table.n_features,
        "features": list(table.feature_names),
        "targets": list(table.target_names) if tensors.y is not None else [],
        "classes": tensors.classes,
        "x_dtype": DTYPE_NAMES[tensors.x.dtype],
        "y_dtype": None if tensors.y is None else DTYPE_NAMES[tensors.y.dtype],
    }
    return DataLoaderPlan(
        tensor_dataset(tensors),
        description,
        body.batch_size,
        body.shuffle,
        body.drop_last,
        body.seed,
        body.max_batches,
        body.include_data,
    )


def compute_data_loader(plan: DataLoaderPlan, deadline: Deadline) -> dict[str, Any]:
    """Run the loader and describe its first batches."""
    batches, n_batches = load_batches(
        plan.dataset,
        batch_size=plan.batch_size,
        shuffle=plan.shuffle,
        drop_last=plan.drop_last,
        seed=plan.seed,
        max_batches=plan.max_batches,
        include_data=plan.include_data,
        deadline=deadline,
    )
    return {
        **plan.description,
        "batch_size": plan.batch_size,
        "n_batches": n_batches,
        "batches": batches,
    }


# --- POST /data/images -----------------------------------------------------------------------


@dataclass
class DataImagesPlan:
    """Decoded pictures, the built pipeline (their outputs charged to the budget) and how
    to batch and answer."""

    image_set: ImageSet
    pipeline: list[BuiltTransform]
    device: torch.device
    seed: int | None
    batch_size: int
    shuffle: bool
    drop_last: bool
    include_data: bool
    png: bool
    columns: int
    max_elements: int
    max_png_pixels: int


def _check_one_source(
    body: DataImagesRequest, uploads: Sequence[Upload], archive: Upload | None
) -> None:
    given = (
        (body.dataset is not None)
        + (body.images is not None)
        + (body.archive is not None)
        + bool(uploads)
        + (archive is not None)
    )
    if given != 1:
        raise InvalidInput(
            "give one source of pictures: `dataset`, `images` (base64 or uploaded files) or "
            "`archive` (base64 or an uploaded zip)" + (f"; {given} were given" if given else ""),
            code=ErrorCode.AMBIGUOUS_INPUT if given else ErrorCode.MISSING_INPUT,
        )
    if body.labels is not None and not (body.images or uploads):
        raise InvalidInput("labels name the classes of `images`", code=ErrorCode.INVALID_INPUT)


def _load_images(
    body: DataImagesRequest,
    uploads: Sequence[Upload],
    archive: Upload | None,
    limits: Limits,
    budget: Budget,
) -> ImageSet:
    if body.dataset is not None:
        return builtin_images(body.dataset, body.mode, budget, body.max_images)
    mode = body.mode or "RGB"
    if archive is not None or body.archive is not None:
        data = archive.data if archive is not None else decode_base64(body.archive or "", "archive")
        return archive_images(data, mode, limits, budget, max_images=body.max_images)
    files = [(upload.filename, upload.data) for upload in uploads] or [
        ("", decode_base64(text, f"images[{i}]")) for i, text in enumerate(body.images or [])
    ]
    labels = body.labels
    if body.max_images is not None:
        files = files[: body.max_images]
        labels = None if labels is None else labels[: body.max_images]
    return uploaded_images(files, labels, mode, limits, budget)


def prepare_data_images(
    ctx: ComputeContext,
    body: DataImagesRequest,
    uploads: Sequence[Upload] = (),
    archive: Upload | None = None,
) -> DataImagesPlan:
    """Check the one source, build the pipeline, decode the pictures and charge every
    picture's predicted output (and the PNG grid's size where it is known already)."""
    _check_one_source(body, uploads, archive)
    specs = (
        None
        if body.transforms is None
        else [{"name": spec.name, **(spec.model_extra or {})} for spec in body.transforms]
    )
    pipeline = build_pipeline(specs)
    image_set = _load_images(body, uploads, archive, ctx.limits, ctx.budget)
    shapes = plan_pipeline(image_set.images, pipeline, ctx.budget)
    charge_batches(
        shapes, body.batch_size, len(image_set.classes), shuffle=body.shuffle, budget=ctx.budget
    )
    png = body.format == "png"
    columns = body.columns or DEFAULT_GRID_COLUMNS
    if png:
        check_grid(
            shapes,
            body.batch_size,
            drop_last=body.drop_last,
            columns=columns,
            max_pixels=ctx.limits.max_png_pixels,
            budget=ctx.budget,
            exact=predicts_exactly(pipeline),
        )
    return DataImagesPlan(
        image_set,
        pipeline,
        ctx.device,
        body.seed,
        body.batch_size,
        body.shuffle,
        body.drop_last,
        body.include_data,
        png,
        columns,
        ctx.limits.max_elements,
        ctx.limits.max_png_pixels,
    )


def compute_data_images(plan: DataImagesPlan, deadline: Deadline) -> dict[str, Any] | Png:
    """Transform every picture, take the statistics and the first batch; describe them, or
    draw the batch as a grid."""
    image_set = plan.image_set
    tensors = apply_pipeline(
        image_set.images,
        plan.pipeline,
        seed=plan.seed,
        max_elements=plan.max_elements,
        deadline=deadline,
    )
    mean, std = channel_stats(tensors, plan.device)
    batch = first_batch(
        tensors,
        image_set.targets,
        plan.batch_size,
        shuffle=plan.shuffle,
        drop_last=plan.drop_last,
        seed=plan.seed,
    )
    if plan.png:
        _, _, height, width = batch.x.shape
        layout = grid_layout(
            int(batch.x.shape[0]),
            int(height),
            int(width),
            plan.columns,
            max_pixels=plan.max_png_pixels,
        )
        picture = batch_grid_png(batch.x, class_labels(image_set.classes, batch.y), layout)
        return Png(picture, panel_headers(layout.count, layout.rows, layout.columns))
    shapes = {tuple(int(s) for s in t.shape) for t in tensors}
    return {
        "source": image_set.source,
        "n_images": len(tensors),
        "classes": image_set.classes,
        "class_to_idx": image_set.class_to_idx,
        "counts": image_set.counts(),
        "skipped": image_set.skipped[:100],
        "n_skipped": len(image_set.skipped),
        "transforms": [step.label for step in plan.pipeline],
        "image_shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
        "batch_size": plan.batch_size,
        "n_batches": batch.n_batches,
        "batch": {
            "x_shape": list(batch.x.shape),
            "x_dtype": DTYPE_NAMES.get(batch.x.dtype, str(batch.x.dtype)),
            "y_shape": list(batch.y.shape),
            "y_dtype": DTYPE_NAMES.get(batch.y.dtype, str(batch.y.dtype)),
            "targets": [int(t) for t in batch.y.tolist()],
            "x": batch.x if plan.include_data else None,
            "y": batch.y if plan.include_data else None,
        },
        "mean": mean,
        "std": std,
    }


WARM_UP_IMAGES = {
    "dataset": "sample_images",
    "batch_size": 1,
    "transforms": [{"name": "Resize", "size": [8, 8]}, {"name": "GaussianBlur", "kernel_size": 3}],
}


def warm_up_images(ctx: ComputeContext) -> None:
    """Plan a small ``/data/images`` request once: the sample photographs are decoded (and
    cached), and the pipeline's first use is paid at start-up. In the server's process
    that first use held the event loop for tens of milliseconds."""
    prepare_data_images(ctx, DataImagesRequest.model_validate(WARM_UP_IMAGES))
