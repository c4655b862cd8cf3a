"""``POST /benchmark``: the tutorial's matrix multiply timed on each device (chapter 1.2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import ComputeRequest, ComputeResponse, Device, Int

BenchDType = Literal["float32", "float64", "float16", "bfloat16"]


class BenchmarkRequest(ComputeRequest):
    """`c = a @ b` with `a` of shape [m, k] and `b` of shape [k, n], drawn from N(0, 1).

    The same numbers (seeded, drawn on the CPU) go to every device, so the norms agree.
    """

    model_config = {
        "json_schema_extra": {"examples": [{"m": 512, "k": 256, "n": 384, "repeats": 3, "seed": 0}]}
    }

    m: Int = Field(default=10000, ge=1, le=10**7, description="Rows of a (tutorial: 10000).")
    k: Int = Field(default=1000, ge=1, le=10**7, description="Columns of a, rows of b (1000).")
    n: Int = Field(default=2000, ge=1, le=10**7, description="Columns of b (tutorial: 2000).")
    dtype: BenchDType = Field(default="float32", description="Element type of a and b.")
    devices: list[Device] | None = Field(
        default=None,
        max_length=16,
        description="Devices to time, in order; default: `device` if given, else every "
        "available one (CPU and each CUDA device).",
    )
    repeats: Int = Field(default=5, ge=1, le=100, description="Timed multiplications.")
    warmup: Int = Field(
        default=1,
        ge=0,
        le=20,
        description="Untimed multiplications between the first (cold) one and the timed ones.",
    )


class BenchmarkResult(BaseModel):
    """Timings on one device."""

    device: str = Field(description="The device timed.", examples=["cpu"])
    device_name: str = Field(description="Hardware name.", examples=["x86_64"])
    first_run_s: float = Field(
        description="The first multiplication on this device in this "
        "request, after the inputs were moved there: on CUDA it carries "
        "the one-off library start-up the tutorial points at."
    )
    median_s: float = Field(description="Median of the timed repeats, in seconds.")
    min_s: float = Field(description="Fastest timed repeat.")
    max_s: float = Field(description="Slowest timed repeat.")
    gflops: float = Field(description="2·m·k·n / median_s / 1e9.")
    norm: float = Field(
        description="`torch.linalg.norm(c)` of the product (accumulated in "
        "float64), to check that devices agree."
    )
    timer: Literal["perf_counter", "cuda_events"] = Field(
        description="How repeats were timed: wall clock on the CPU; CUDA events on the GPU."
    )
    tf32: bool | None = Field(
        description="On CUDA, whether float32 matmuls may use TF32 "
        "tensor cores (`torch.backends.cuda.matmul.allow_tf32`); null on "
        "the CPU."
    )


class BenchmarkResponse(ComputeResponse):
    """One result per device, plus how far their norms disagree."""

    torch_version: str = Field(description="torch's version.", examples=["2.14.1"])
    cuda_available: bool = Field(description="Whether CUDA devices can be used here.")
    m: int = Field(description="Rows of a.")
    k: int = Field(description="Columns of a, rows of b.")
    n: int = Field(description="Columns of b.")
    dtype: BenchDType = Field(description="Element type of a and b.")
    flops_per_run: int = Field(description="2·m·k·n.")
    results: list[BenchmarkResult] = Field(description="One entry per device, in order.")
    max_norm_rel_diff: float | None = Field(
        description="Largest |norm − norm of the first device| / norm of the first device; "
        "null with one device."
    )
