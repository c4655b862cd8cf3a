"""Fixtures of the unit tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


@pytest.fixture
def timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays of the timers started (``asyncio.timeout``), in order."""
    started: list[float] = []
    timeout = asyncio.timeout

    def counted(delay: float) -> Any:
        started.append(delay)
        return timeout(delay)

    monkeypatch.setattr(asyncio, "timeout", counted)
    return started
