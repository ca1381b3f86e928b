"""``/livez`` and ``/readyz``: what an orchestrator needs to route traffic here, and to
restart the process when it cannot recover by itself."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future

from store import MilvusStore
from store.versions import ModelVersions

PROBE_TIMEOUT_S = 1.0
"""How long ``/readyz`` waits for the store before it answers "not ready"."""


class Readiness:
    """Ready = Milvus answers, the serving collection is loaded, it serves this process's
    model (``model_version``: the registry's record of what the alias reaches, when it has
    one), and the model is warm.

    A process whose model no longer serves (``lookalike reindex`` switched the aliases) is
    not ready: its searches answer 503 ``model_mismatch``, and it comes back only when the
    aliases move back. ``/livez`` stays up: a restart with the same settings would not help
    (``serve`` and ``run`` refuse a model that does not serve), new settings are a deploy.

    An orchestrator polls this every few seconds, and a slow or hung Milvus must show up as
    "not ready" within :data:`PROBE_TIMEOUT_S` rather than as a hanging probe. The store is
    asked on a thread of its own, never the search pool's (five probes hung on a frozen
    Milvus Lite took every search worker for 60 s, and a search by id served from memory
    waited for them), and at most one check runs at a time: probes that come while it runs
    share its answer, so a store that never answers holds one thread, not one per probe.
    """

    def __init__(self, store: MilvusStore, collection: str,
                 model_warm: Callable[[], bool], *, model_version: str,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._store = store
        self._model_version = model_version
        self._versions = ModelVersions(store, collection)
        self._model_warm = model_warm
        self._timeout_s = timeout_s
        self._running: Future[dict[str, str]] | None = None
        self._lock = threading.Lock()

    async def probe(self) -> dict[str, str]:
        """:meth:`check`, or, when the store has not answered within the timeout, a Milvus
        that did not answer."""
        future = self._shared_check()
        done, _ = await asyncio.wait({asyncio.wrap_future(future)}, timeout=self._timeout_s)
        if done:
            return future.result()
        return {"milvus": f"no answer within {self._timeout_s:g} s", "collection": "unknown",
                "model": self._model_state()}

    def _shared_check(self) -> Future[dict[str, str]]:
        with self._lock:
            running = self._running
            if running is None or running.done():
                running = self._running = Future()
                threading.Thread(target=self._check_into, args=(running,), name="readyz",
                                 daemon=True).start()  # daemon: a hung store cannot hold exit
            return running

    def _check_into(self, future: Future[dict[str, str]]) -> None:
        try:
            future.set_result(self.check())
        except BaseException as exc:  # handed to every probe waiting on it
            future.set_exception(exc)

    def _model_state(self) -> str:
        return "ok" if self._model_warm() else "warming up"

    def check(self) -> dict[str, str]:
        """Every check by name: ``"ok"`` or why it is not (blocking: :meth:`probe` bounds
        it)."""
        checks = {"milvus": "ok", "collection": "ok", "model": self._model_state()}
        try:
            serving = self._versions.serving_unloaded()
        except Exception as exc:
            checks["milvus"] = f"unreachable: {type(exc).__name__}"
            checks["collection"] = "unknown"
            return checks
        if serving is not None and serving.model_version not in (None, self._model_version):
            checks["model"] = (f"mismatch: {serving.base} serves model {serving.model_version}, "
                               f"this process embeds with {self._model_version}")
        try:
            if serving is None:
                checks["collection"] = f"{self._versions.base} does not exist yet"
            elif not self._store.is_loaded(serving.physical):
                checks["collection"] = f"{serving.physical} is not loaded"
        except Exception as exc:
            checks["collection"] = f"cannot tell: {type(exc).__name__}"
        return checks

    def lost(self) -> str | None:
        """Why this process cannot serve again without a restart, or None. So far one cause:
        the Milvus Lite child serving the database exited (killed, out of memory); the store
        does not start it again (store/client.py ``_check_process``), so searches would
        answer 503 for ever while ``/livez`` said 200 and nothing restarted the process."""
        process = self._store.lite_process
        if process is None or process.alive():
            return None
        return (f"the Milvus Lite process exited (status {process.returncode}); the process "
                "must be restarted to open the database again")
