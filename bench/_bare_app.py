"""The service's app plus one bare route, for ``bench/overhead.py``.

``POST /bare`` returns ``{"ok": true}`` from a plain ``async def``: it shares the process,
the middleware and the configuration with ``POST /tensor/ops``, so the difference between
the two is what the tensor route itself costs.

    uvicorn bench._bare_app:app
"""

from __future__ import annotations

from service.main import create_app

app = create_app()


@app.post("/bare")
async def bare() -> dict[str, bool]:
    return {"ok": True}
