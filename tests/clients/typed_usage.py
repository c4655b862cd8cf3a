"""The client as a typed program uses it: ``make lint`` runs mypy (strict) over this file,
and ``test_typed_usage.py`` runs it against the app.

``assert_type`` lines fail mypy when a result field loses its type (becomes ``Any``); the
``type: ignore`` lines under ``TYPE_CHECKING`` fail it (as unused ignores) when a typo stops
being an error at the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_type

import numpy as np
import numpy.typing as npt
import torchlab_client as tl
from torchlab_client import ops

Array = npt.NDArray[Any]


def usage(client: tl.Client) -> None:
    """Every kind of result, read through its typed fields."""
    out = client.tensor_ops(
        [ops.arange(6, out="a"), ops.reshape("a", [2, 3], out="a"), ops.info("a", out="i")],
        returns=["a", "i"],
    )
    assert_type(out, tl.TensorOpsResult)
    assert_type(out["a"], Array)
    assert_type(out.info["i"].shape, tuple[int, ...])
    assert out["a"].shape == (2, 3)

    result = client.grad("sum(x**2)", inputs={"x": np.array([1.0, 2.0])}, hessian=True)
    assert_type(result.grads["x"], Array)
    assert result.hessians is not None

    fit = client.linear_regression(dataset="exam")
    assert_type(fit.model.coef, Array)
    assert_type(fit.model.predict([1.0, 2.0]), Array)
    prediction = client.predict(fit, [1.0, 2.0])
    assert_type(prediction.y, Array)
    np.testing.assert_allclose(prediction.y, fit.model.predict([1.0, 2.0]), rtol=1e-12)

    loader = client.data_loader("iris", batch_size=50, max_batches="all", include_data=True)
    for batch in loader:
        assert_type(batch, tl.Batch)
        assert_type(batch.x, Array | None)
    assert loader.complete

    quick = client.with_options(timeout=30.0, retries=0)
    assert_type(quick, tl.Client)
    assert quick.health().ok

    if TYPE_CHECKING:  # typos are errors at the call, for mypy too (never run)
        client.grad("sum(x**2)", inputs={"x": [1.0]}, hesian=True)  # type: ignore[arg-type]
        client.conv(input=np.ones((4, 4)), kernel_sizes=3)  # type: ignore[call-arg]
        ops.matmul("a", "b", outt="c")  # type: ignore[call-arg]
        client.data_loader("iris", max_batches="every")  # type: ignore[arg-type]


async def async_usage(client: tl.AsyncClient) -> None:
    """The async client's results have the same types."""
    out = await client.tensor_ops(ops.ones([2, 2]))
    assert_type(out["out"], Array)
    fit = await client.logistic_regression(dataset="iris")
    assert_type(fit.model.predict_proba([[5.0, 3.0, 1.5, 0.2]]), Array)
