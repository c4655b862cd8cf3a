"""torchlab-client: the Python client of the torchlab service (PyTorch over HTTP).

::

    import numpy as np
    import torchlab_client as tl

    with tl.Client("http://127.0.0.1:8000") as client:
        out = client.tensor_ops(
            [tl.ops.arange(16, out="t"), tl.ops.reshape("t", [2, 2, -1], out="t")],
        )
        value, grads = client.grad("sum(x**2 + 2*x + 1)", inputs={"x": np.array([[1.0], [2.0]])})

:class:`Client` blocks; :class:`AsyncClient` has the same methods, awaited. Tensors come
back as numpy arrays of their wire dtype (bfloat16 as float32), or torch tensors with
``as_torch=True`` when torch is installed; pictures as :class:`PNGImage` (``to_pil()`` with
Pillow). Errors are the tree documented in :mod:`torchlab_client._exceptions`:
``TorchlabError`` > ``APIError`` (``ValidationError``, ``DeviceUnavailableError``,
``TooLargeError``, ``UnauthorizedError``, ``NotFoundError``, ``RateLimitedError``,
``BodyTimeoutError``, ``ComputeTimeoutError``, ``ServerError``, ``DeviceOutOfMemoryError``),
``TransportError`` (``ConnectError``, ``TransportTimeoutError``), ``ProtocolError``
(``ResponseTooLargeError``) and ``ClientClosedError``.
:mod:`torchlab_client.ops` builds ``tensor_ops`` steps with the service's parameter names.
"""

from torchlab_client import ops
from torchlab_client._async_client import AsyncClient
from torchlab_client._base import DEFAULT_B64_THRESHOLD
from torchlab_client._calls import TorchlabWarning
from torchlab_client._codec import decode_tensor, encode_tensor
from torchlab_client._exceptions import (
    APIError,
    BodyTimeoutError,
    ClientClosedError,
    ComputeTimeoutError,
    ConnectError,
    DeviceOutOfMemoryError,
    DeviceUnavailableError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    TooLargeError,
    TorchlabError,
    TransportError,
    TransportTimeoutError,
    UnauthorizedError,
    ValidationError,
)
from torchlab_client._images import PNGImage, encode_png
from torchlab_client._progress import ProgressBar, ProgressEvent
from torchlab_client._retry import Retry
from torchlab_client._sync_client import Client
from torchlab_client._types import (
    ActivationFunction,
    ActivationList,
    ActivationResult,
    ActivationResults,
    Batch,
    BenchmarkResult,
    ConvResult,
    DatasetInfo,
    DeviceInfo,
    DeviceTiming,
    GradResult,
    Health,
    ImageBatch,
    ImagesResult,
    LinearLayerResult,
    LinearRegressionResult,
    LoaderResult,
    LogisticRegressionResult,
    PoolResult,
    Prediction,
    RegressionModel,
    RNNResult,
    ServiceInfo,
    TensorInfo,
    TensorOpsResult,
)
from torchlab_client._version import __version__

__all__ = [
    "DEFAULT_B64_THRESHOLD",
    "APIError",
    "ActivationFunction",
    "ActivationList",
    "ActivationResult",
    "ActivationResults",
    "AsyncClient",
    "Batch",
    "BenchmarkResult",
    "BodyTimeoutError",
    "Client",
    "ClientClosedError",
    "ComputeTimeoutError",
    "ConnectError",
    "ConvResult",
    "DatasetInfo",
    "DeviceInfo",
    "DeviceOutOfMemoryError",
    "DeviceTiming",
    "DeviceUnavailableError",
    "GradResult",
    "Health",
    "ImageBatch",
    "ImagesResult",
    "LinearLayerResult",
    "LinearRegressionResult",
    "LoaderResult",
    "LogisticRegressionResult",
    "NotFoundError",
    "PNGImage",
    "PoolResult",
    "Prediction",
    "ProgressBar",
    "ProgressEvent",
    "ProtocolError",
    "RNNResult",
    "RateLimitedError",
    "RegressionModel",
    "ResponseTooLargeError",
    "Retry",
    "ServerError",
    "ServiceInfo",
    "TensorInfo",
    "TensorOpsResult",
    "TooLargeError",
    "TorchlabError",
    "TorchlabWarning",
    "TransportError",
    "TransportTimeoutError",
    "UnauthorizedError",
    "ValidationError",
    "__version__",
    "decode_tensor",
    "encode_png",
    "encode_tensor",
    "ops",
]
