"""The app's state: a Starlette ``State`` whose values are also plain attributes."""

from __future__ import annotations

import pytest

from service.deps import AppState
from service.main import create_app
from tests.conftest import make_settings


def test_values_are_set_read_and_deleted_as_a_states() -> None:
    state = AppState()
    state.a = 1
    state["b"] = 2
    assert (state.a, state.b, state["a"], state._state) == (1, 2, 1, {"a": 1, "b": 2})
    assert vars(state)["a"] == 1  # read without State.__getattr__
    state.a = 3
    assert (state.a, state["a"]) == (3, 3)
    del state.a
    del state["b"]
    assert state._state == {}
    with pytest.raises(AttributeError):
        _ = state.a
    with pytest.raises(AttributeError):
        _ = state.b


def test_the_app_keeps_its_services_there() -> None:
    settings = make_settings()
    app = create_app(settings)
    assert isinstance(app.state, AppState)
    assert vars(app.state)["settings"] is settings is app.state._state["settings"]
