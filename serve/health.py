"""``/livez`` and ``/readyz``: what an orchestrator needs to route traffic here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schema.versions import ModelVersions


class Readiness:
    """Ready = Milvus answers, the serving collection is loaded, and the model is warm.

    Each check is a short call: an orchestrator polls this every few seconds, and a slow or
    failing Milvus must show up as "not ready" rather than as a hanging probe.
    """

    def __init__(self, client: Any, collection: str, model_warm: Callable[[], bool]) -> None:
        self._client = client
        self._versions = ModelVersions(client, collection)
        self._model_warm = model_warm

    def check(self) -> dict[str, str]:
        """Every check by name: ``"ok"`` or why it is not."""
        checks = {"milvus": "ok", "collection": "ok",
                  "model": "ok" if self._model_warm() else "warming up"}
        try:
            self._client.get_server_version()
        except Exception as exc:
            checks["milvus"] = f"unreachable: {type(exc).__name__}"
            checks["collection"] = "unknown"
            return checks
        try:
            serving = self._versions.serving_unloaded()
            if serving is None:
                checks["collection"] = f"{self._versions.base} does not exist yet"
            else:
                state = self._client.get_load_state(serving.physical)["state"]
                if getattr(state, "name", str(state)) != "Loaded":
                    checks["collection"] = f"{serving.physical} is {getattr(state, 'name', state)}"
        except Exception as exc:
            checks["collection"] = f"cannot tell: {type(exc).__name__}"
        return checks
