"""``/livez`` and ``/readyz``: what an orchestrator needs to route traffic here."""

from __future__ import annotations

from collections.abc import Callable

from store import MilvusStore
from store.versions import ModelVersions


class Readiness:
    """Ready = Milvus answers, the serving collection is loaded, and the model is warm.

    Each check is a short call: an orchestrator polls this every few seconds, and a slow or
    failing Milvus must show up as "not ready" rather than as a hanging probe.
    """

    def __init__(self, store: MilvusStore, collection: str,
                 model_warm: Callable[[], bool]) -> None:
        self._store = store
        self._versions = ModelVersions(store, collection)
        self._model_warm = model_warm

    def check(self) -> dict[str, str]:
        """Every check by name: ``"ok"`` or why it is not."""
        checks = {"milvus": "ok", "collection": "ok",
                  "model": "ok" if self._model_warm() else "warming up"}
        try:
            serving = self._versions.serving_unloaded()
        except Exception as exc:
            checks["milvus"] = f"unreachable: {type(exc).__name__}"
            checks["collection"] = "unknown"
            return checks
        try:
            if serving is None:
                checks["collection"] = f"{self._versions.base} does not exist yet"
            elif not self._store.is_loaded(serving.physical):
                checks["collection"] = f"{serving.physical} is not loaded"
        except Exception as exc:
            checks["collection"] = f"cannot tell: {type(exc).__name__}"
        return checks
