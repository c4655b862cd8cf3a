"""``GET /health`` and ``GET /info``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class HealthResponse(BaseModel):
    """Liveness."""

    status: Literal["ok"] = Field(description="Always `ok` while the service answers.")


class DeviceInfo(BaseModel):
    """One compute device."""

    name: str = Field(description="What to send as `device`.", examples=["cuda:0"])
    type: Literal["cpu", "cuda"] = Field(description="Device type.")
    device_name: str = Field(description="Hardware name.", examples=["NVIDIA H100 80GB HBM3"])
    threads: int | None = Field(default=None, description="torch intra-op threads (CPU).")
    cpu_count: int | None = Field(default=None, description="Logical CPUs of the host (CPU).")
    total_memory_bytes: int | None = Field(default=None, description="CUDA memory in bytes.")
    free_memory_bytes: int | None = Field(default=None, description="Free CUDA memory now.")
    capability: str | None = Field(default=None, description="CUDA compute capability.")


class InfoResponse(BaseModel):
    """What this service is, where it computes, and the limits in force."""

    name: str = Field(description="Service name.", examples=["torchlab"])
    version: str = Field(description="Service version.", examples=["0.1.0"])
    torch_version: str = Field(description="torch's version.", examples=["2.14.1"])
    torchvision_version: str | None = Field(
        description="torchvision's version.", examples=["0.29.1"]
    )
    cuda_available: bool = Field(description="Whether CUDA devices can be used.")
    cpu_threads: int = Field(description="torch intra-op threads on the CPU.")
    default_device: str = Field(
        description="Used when a request gives no `device` (or `auto`).", examples=["cpu"]
    )
    devices: list[DeviceInfo] = Field(description="Every device a request may ask for.")
    limits: dict[str, Any] = Field(
        description="Limits in force (see the configuration table in the README).",
        examples=[{"max_body_bytes": 67108864, "max_elements": 33554432}],
    )
    throughput: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Each measured device's rates, against which a request's time is "
        "predicted before it runs: GFLOP/s of a matrix multiply per dtype, and "
        "`elements_per_s` of a memory-bound pass.",
        examples=[{"cpu": {"float32": 180.0, "float16": 0.9, "elements_per_s": 1e9}}],
    )
    auth_required: bool = Field(description="Whether routes other than /health need an API key.")
