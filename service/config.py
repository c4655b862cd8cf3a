"""Service settings, read once from ``TORCHLAB_*`` environment variables and passed in."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class Settings(BaseSettings):
    """Every limit and switch of the service. ``GET /info`` reports the limits in force."""

    model_config = SettingsConfigDict(env_prefix="TORCHLAB_", extra="ignore")

    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    """Default compute device: ``auto`` picks ``cuda:0`` when CUDA is available, else ``cpu``."""

    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    """Largest request body accepted, counted while it streams in (chunked bodies too)."""

    max_elements: Annotated[int, Field(ge=1)] = 1 << 25
    """Largest number of elements of any one tensor, input, intermediate or output."""

    max_total_elements: Annotated[int, Field(ge=1)] = 1 << 27
    """Largest number of elements summed over every tensor one request creates."""

    max_flops: Annotated[float, Field(gt=0)] = 2e12
    """Largest estimated number of floating-point operations one request may perform."""

    max_steps: Annotated[int, Field(ge=1)] = 64
    """Largest number of steps in a ``/tensor/ops`` program."""

    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Compute time allowed per request; past it the answer is 504."""

    max_inflight_per_device: Annotated[int, Field(ge=1)] = 2
    """Compute requests running at once on each device; more wait in a queue."""

    queue_timeout_s: Annotated[float, Field(ge=0)] = 2.0
    """How long a request waits for a free compute slot before a 429 with ``Retry-After``."""

    api_keys: Annotated[list[str], NoDecode] = []
    """Accepted API keys, comma-separated; empty means no authentication."""

    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins allowed by CORS, comma-separated (``*`` for any); empty disables CORS."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the service's logs, the access log included."""

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def limits(self) -> dict[str, float | int]:
        """The limits in force, as ``GET /info`` reports them."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_elements": self.max_elements,
            "max_total_elements": self.max_total_elements,
            "max_flops": self.max_flops,
            "max_steps": self.max_steps,
            "request_timeout_s": self.request_timeout_s,
            "max_inflight_per_device": self.max_inflight_per_device,
            "queue_timeout_s": self.queue_timeout_s,
        }
