"""Per-model statistics of the V2 routes, as Triton's statistics extension reports them.

Counts and total nanoseconds since this server process started (each process of a scaled
deployment counts its own requests), kept on the event loop: no lock, a few additions per
request. A request's time splits into stages that add up to it: reading and planning
(``compute_input``), waiting for a compute slot (``queue``), the operation itself
(``compute_infer``, as the worker measured it) and the rest until the response is ready
(``compute_output``: encoding the output and handing it back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from schemas.v2 import (
    MODEL_VERSION,
    DurationStat,
    InferenceStats,
    ModelStatisticsResponse,
    ModelStats,
)
from service.api.compute import Stages


@dataclass
class Duration:
    """A count and a total time in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(ns, 0)

    def stat(self) -> DurationStat:
        return DurationStat(count=self.count, ns=self.ns)


STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class ModelStatistics:
    """One model's counts and times."""

    name: str
    durations: dict[str, Duration] = field(
        default_factory=lambda: {stage: Duration() for stage in STAGES}
    )
    last_inference_ms: int = 0

    def succeeded(self, begun: int, stages: Stages) -> None:
        """A request that began at ``begun`` (``time.perf_counter_ns``) was answered now."""
        ready = time.perf_counter_ns()
        planned = stages.planned or ready
        started = stages.started or planned
        d = self.durations
        d["success"].add(ready - begun)
        d["compute_input"].add(planned - begun)
        d["queue"].add(started - planned)
        d["compute_infer"].add(stages.compute_ns)
        d["compute_output"].add(ready - started - stages.compute_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, begun: int) -> None:
        """A request that began at ``begun`` ended in an error now."""
        self.durations["fail"].add(time.perf_counter_ns() - begun)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def stats(self) -> ModelStats:
        d = self.durations
        answered = d["success"].count
        none = DurationStat(count=0, ns=0)
        return ModelStats(
            name=self.name,
            version=MODEL_VERSION,
            last_inference=self.last_inference_ms,
            inference_count=answered,
            execution_count=answered,
            inference_stats=InferenceStats(
                **{stage: d[stage].stat() for stage in STAGES}, cache_hit=none, cache_miss=none
            ),
        )


class Statistics:
    """Every model's statistics, made on a model's first request."""

    def __init__(self) -> None:
        self._models: dict[str, ModelStatistics] = {}

    def of(self, name: str) -> ModelStatistics:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = ModelStatistics(name)
        return model

    def response(self, names: list[str]) -> ModelStatisticsResponse:
        """The statistics of ``names`` (zeros for a model never called), in that order."""
        entries = [(self._models.get(name) or ModelStatistics(name)).stats() for name in names]
        return ModelStatisticsResponse(model_stats=entries)
