"""``lookalike reindex``: copy the serving catalog into a new model's collections, then switch.

Steps (see schema/versions.py for the names and store/versions.py for the aliases):

1. Source = the physical pair ``<base>`` reaches now; target = the configured model's own pair
   (created and registered as ``building``). Searches keep reading the source meanwhile.
2. A *pass* reads every source and target state. A product is copied when the target lacks it
   or holds an older version (or a different listed flag), or when the target holds rows of
   another model for it; products only in the target are deleted. Copying reads the product's
   image rows, fetches and decodes each stored image reference again (ingest/fetch.py; decoded
   on a pool of ``decode_workers`` threads as ingest does, ingest/load.py), embeds it with the
   new model and writes the rows with the new vector and model version, every other field
   unchanged, then the state (written last, as ingest does). Delisted products are copied as
   tombstones. Resumable: a second run skips what is already there.
3. Passes repeat, each catching products that the running ingest of the old model changed
   during the previous one, until one is small (``switch_changes``: :meth:`_small_enough`).
   Each pass first checks that its source still serves (another run may have switched).
4. Then, when every source product is in the target or reported as failed (and failures are
   allowed), the target is flushed, the source is registered ``retiring`` (a catch-up from it
   is owed) and the aliases switch (``alter_alias``).
5. After ``settle_s`` (for an ingest batch that was being written while the aliases moved),
   the catch-up pass copies what the old ingest wrote after the last pass read it, then marks
   the source ``retired``. That ingest stops by itself at its next batch (``ServingGuard``)
   without committing it, or while idle within ``ingest.runner.IDLE_CHECK_EVERY_S``; restart
   it with the new model. Steps 4 (from the aliases on) and 5 are one: SIGINT and SIGTERM
   wait for them. Cut anyway (kill -9, a crash), the ``retiring``
   record stays, and the next run with the new model runs the catch-up instead of refusing.

A product is copied whole or not at all: if one of its images cannot be fetched or decoded, it
is reported with each image's reason and not written (``allow_failures`` writes its good images,
like ingest does, keeps the state of a product none of whose images could be (reported in
``imageless``), and lets the switch happen, unless no image at all could be copied). Inline
(base64) images are not stored, so they cannot be embedded again: those products are reported
(reason ``inline_image``).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import ValidationError

from embedding.embedder import Embedder, PreparedEmbedder
from ingest.fetch import ImageFetcher
from ingest.load import decode_pool, load_image_ref
from ingest.plan import WritePlan
from ingest.sink import MilvusSink, read_states, state_of
from lookalike import signals
from schema.collection import IMAGE_FIELDS, STATE_FIELDS, CollectionSpec
from schema.errors import ItemError, Reason, clipped
from schema.events import ImageRef
from schema.records import ImageRecord, ProductState
from schema.versions import DEFAULT_LEASE_S, ModelEntry, Serving, state_name
from store.lease import LeaseLostError
from store.versions import ModelVersions

log = logging.getLogger(__name__)

_ROW_FIELDS = [f for f in IMAGE_FIELDS if f != "vector"]


class ReindexError(RuntimeError):
    """Re-indexing cannot start (nothing serves, or the model already serves)."""


class SourceRetiredError(RuntimeError):
    """The pair this run copies from no longer serves: another switch happened meanwhile."""


@dataclass(frozen=True)
class ImageProblem:
    image_ref: str
    reason: Reason
    detail: str


def _failures_refused(failures: dict[str, list[ImageProblem]]) -> str:
    """Why a reindex with failures does not switch, and what to do: products whose photos
    are local paths outside the image roots (``path_not_allowed``) need the roots (the
    reindex was run without ``--image-root``, as ingest was with it), not ``--allow-failures``,
    which would switch to a catalog without them."""
    roots = sum(any(p.reason is Reason.PATH_NOT_ALLOWED for p in problems)
                for problems in failures.values())
    said = f"{len(failures)} product(s) could not be re-embedded (see the failures)"
    if not roots:
        return f"{said}; fix them or pass --allow-failures"
    hint = "pass --image-root DIR or set LOOKALIKE_IMAGES__ROOTS, as for ingest"
    if roots == len(failures):
        return f"{said}: their photos are local paths outside the image roots " \
               f"(path_not_allowed): {hint}"
    return (f"{said}: {roots} of them have photos outside the image roots (path_not_allowed: "
            f"{hint}); fix the others or pass --allow-failures")


@dataclass
class PassReport:
    number: int
    after_switch: bool = False
    to_copy: int = 0
    copied: int = 0
    """Products written (tombstones included)."""
    deleted: int = 0
    """Products removed from the target (gone from the source)."""
    failed: int = 0
    images: int = 0
    """Images embedded."""
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.copied or self.deleted)

    def summary(self) -> str:
        return (
            f"pass={self.number} after_switch={self.after_switch} to_copy={self.to_copy} "
            f"copied={self.copied} deleted={self.deleted} failed={self.failed} "
            f"images={self.images} seconds={self.seconds:.1f}"
        )


@dataclass
class ReindexReport:
    base: str
    model_version: str
    source: str
    target: str
    passes: list[PassReport] = field(default_factory=list)
    failures: dict[str, list[ImageProblem]] = field(default_factory=dict)
    """product_id -> the problems of its images (last seen)."""
    switched: bool = False
    caught_up: list[str] = field(default_factory=list)
    """Retired pairs whose owed catch-up pass this run finished."""
    imageless: set[str] = field(default_factory=set)
    """Listed products copied without any image (``allow_failures`` and every image failed):
    searches cannot find them by photo until they are published again."""
    refused: str = ""
    """Why the switch did not happen ("" when it did, or was not asked for)."""
    seconds: float = 0.0

    @property
    def products_copied(self) -> int:
        return sum(p.copied for p in self.passes)

    @property
    def images_embedded(self) -> int:
        return sum(p.images for p in self.passes)

    def summary(self) -> str:
        rate = self.images_embedded / self.seconds if self.seconds > 0 else 0.0
        return (
            f"model={self.model_version} source={self.source} target={self.target} "
            f"passes={len(self.passes)} products_copied={self.products_copied} "
            f"products_deleted={sum(p.deleted for p in self.passes)} "
            f"images_embedded={self.images_embedded} images_per_s={rate:.1f} "
            f"failed_products={len(self.failures)} imageless_products={len(self.imageless)} "
            f"switched={self.switched} caught_up={len(self.caught_up)} "
            f"seconds={self.seconds:.1f}"
        )


def stored_image(reference: str) -> ImageRef:
    """The image a stored ``image_ref`` names again (a URL or a path); inline images are not
    stored and cannot be fetched twice."""
    if reference.startswith("inline:"):
        raise ItemError(Reason.INLINE_IMAGE, "inline image bytes are not stored; publish it again")
    try:
        return ImageRef.model_validate(reference)
    except ValidationError as exc:
        raise ItemError(Reason.BAD_REFERENCE, str(exc.errors()[0]["msg"])) from None


def _same(image: Image.Image) -> Image.Image:
    return image


def _finishing_the_switch(sig: signal.Signals) -> None:
    log.warning("reindex: %s: finishing the switch and its catch-up pass first", sig.name)


class Reindexer:
    """Builds ``embedder``'s collections from the serving ones and switches the aliases."""

    def __init__(
        self,
        versions: ModelVersions,
        embedder: Embedder,
        fetcher: ImageFetcher,
        pool: ThreadPoolExecutor,
        *,
        max_pixels: int,
        decode_workers: int = 1,
        chunk_products: int = 16,
        max_passes: int,
        settle_s: float,
        switch_changes: int = 50,
        on_chunk: Callable[[int], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lease_s: float = DEFAULT_LEASE_S,
        lease_confirm_s: float = 1.0,
    ) -> None:
        self._versions = versions
        self._store = versions.store
        self._embedder = embedder
        self._fetcher = fetcher
        self._pool = pool
        self._max_pixels = max_pixels
        # Photos are fetched on ``pool`` and decoded on a pool of decode_workers threads, as
        # ingest does (ingest/load.py): a 40-megapixel photo decoded on each of 8 fetch threads
        # left every one of their malloc arenas holding hundreds of megabytes.
        self._decoder = decode_pool(decode_workers)
        self._chunk = max(1, chunk_products)
        self._max_passes = max(1, max_passes)
        self._settle_s = settle_s
        self._switch_changes = max(0, switch_changes)
        self._on_chunk = on_chunk
        self._sleep = sleep
        # One run at a time per base name, on every machine sharing the server (store/lease.py)
        self._lease = versions.reindex_lease("reindex", ttl_s=lease_s, confirm_s=lease_confirm_s)
        self._decode_size: int | None = getattr(embedder, "decode_size", None)
        self._prepared = embedder if isinstance(embedder, PreparedEmbedder) else None
        self._failed_at: dict[str, int] = {}
        """product_id -> source version that failed in this run (not retried at it)."""
        self._allow_failures = False
        self.report: ReindexReport | None = None

    def run(
        self, *, switch: bool = True, allow_failures: bool = False,
        before_pass: Callable[[int], None] | None = None,
    ) -> ReindexReport:
        """Copy until complete, then switch (unless ``switch=False``). ``before_pass`` is
        called with each pass number (tests use it to change the source meanwhile).

        When the model already serves and a catch-up is owed (a switch cut short right after
        the aliases moved), runs that catch-up instead of refusing.

        Holds the base name's reindex lease throughout (released at the end, also on errors;
        a killed run's expires after ``lease_s``): raises
        :class:`store.lease.LeaseHeldError` at once while another run holds it. What is
        refused whoever holds the lease (nothing serves; the model serves already, with no
        catch-up owed) is refused before the lease is taken: a typo in ``--collection``
        creates no lease collection, and nothing waits for the lease's confirmation."""
        self._serving()
        with self._lease:
            return self._run(switch=switch, allow_failures=allow_failures,
                             before_pass=before_pass)

    def _serving(self) -> tuple[Serving, list[ModelEntry]]:
        """What ``<base>`` serves and the catch-ups owed, refusing what any run refuses
        (nothing serves; this model serves already, with no catch-up owed). Read before the
        lease is taken, so such a refusal creates nothing, and again under it (another run
        may have switched meanwhile)."""
        serving = self._versions.load_serving()
        if serving is None:
            raise ReindexError(
                f"nothing to re-index: {self._versions.base} does not exist yet "
                "(the first ingest creates it for its model)"
            )
        owed = self._versions.catch_ups_owed()
        model = self._embedder.model_version
        if serving.model_version == model and (not owed or serving.legacy):
            raise ReindexError(f"model {model} already serves {self._versions.base} "
                               f"({serving.physical}): nothing to do")
        return serving, owed

    def _run(
        self, *, switch: bool, allow_failures: bool,
        before_pass: Callable[[int], None] | None,
    ) -> ReindexReport:
        started = time.monotonic()
        self._allow_failures = allow_failures
        model = self._embedder.model_version
        serving, owed = self._serving()
        if serving.model_version == model:
            report = self._catch_up_only(model, serving.physical, [e.physical for e in owed])
            report.seconds = time.monotonic() - started
            return report
        if owed:
            raise ReindexError(
                f"a switch to model {serving.model_version} was cut short before its catch-up "
                f"pass from {', '.join(e.physical for e in owed)}: run `lookalike reindex` with "
                f"model {serving.model_version} first (it copies those last writes)")
        target = self._versions.ensure_building(model, self._embedder.dim)
        sink = MilvusSink(self._store, target)
        report = ReindexReport(self._versions.base, model, serving.physical, target.name)
        self.report = report
        log.info("reindex: model %s, from %s (model %s) into %s",
                 model, serving.physical, serving.model_version, target.name)
        ready = False
        try:
            for number in range(1, self._max_passes + 1):
                if before_pass is not None:
                    before_pass(number)
                p = self._pass(number, serving.physical, target, sink, report)
                if self._small_enough(report.passes):
                    ready = True
                    break
        except (SourceRetiredError, LeaseLostError) as exc:
            report.refused = str(exc)
        sink.flush()
        if report.refused:
            pass
        elif not ready:
            report.refused = (f"the source still changed after {self._max_passes} passes "
                              f"(last: {p.copied + p.deleted} products); run reindex again")
        elif report.failures and not allow_failures:
            report.refused = _failures_refused(report.failures)
        elif report.failures and not self._has_images(target):
            report.refused = (f"{len(report.failures)} product(s) could not be re-embedded and "
                              "none could (see the failures): --allow-failures does not switch "
                              "searches to an empty catalog")
        if report.imageless:
            log.warning("reindex: %d listed product(s) have no image in model %s (each image "
                        "failed): publish them again: %s", len(report.imageless), model,
                        " ".join(sorted(report.imageless)[:50]))
        if switch and not report.refused:
            with signals.held(_finishing_the_switch) as received:
                try:
                    self._switch(model, serving.physical, target, sink, report)
                except (SourceRetiredError, LeaseLostError) as exc:
                    report.refused = str(exc)
                    log.error("reindex: not switching: %s", report.refused)
            if received:
                log.warning("reindex: %s came during the switch, which is done: %s serves "
                            "model %s", received[0].name, self._versions.base, model)
        elif report.refused:
            log.error("reindex: not switching: %s", report.refused)
        report.seconds = time.monotonic() - started
        return report

    def _small_enough(self, passes: list[PassReport]) -> bool:
        """Whether the last pass leaves little enough for the catch-up pass after the switch:
        it changed at most ``switch_changes`` products, or no fewer than the pass before it
        (steady ingest traffic holds every pass near the same size: more passes would not
        shrink the catch-up, only delay the switch). The catch-up copies every later write
        however many there are; this only bounds how long the new pair lags after the switch
        (about one pass). ``switch_changes=0`` keeps the strict rule: a pass that changed
        nothing."""
        changes = [p.copied + p.deleted for p in passes]
        if changes[-1] <= self._switch_changes:
            return True
        return self._switch_changes > 0 and len(changes) > 1 and changes[-1] >= changes[-2]

    def _has_images(self, target: CollectionSpec) -> bool:
        return bool(self._store.query(target.name, 'pk != ""', ["pk"], limit=1,
                                      consistency="Strong"))

    def _catch_up_only(self, model: str, serving: str, owed: list[str]) -> ReindexReport:
        """The catch-up pass(es) a switch cut short owes: copy what the retired pairs got last
        into the serving pair (the aliases already moved: nothing else to do)."""
        target = self._versions.spec_for(model, self._embedder.dim)
        report = ReindexReport(self._versions.base, model, ", ".join(owed), target.name)
        self.report = report
        if target.name != serving:
            raise ReindexError(f"model {model} serves {self._versions.base} from {serving}, "
                               f"not from its own pair {target.name}")
        log.warning("reindex: model %s already serves %s, but the switch to it was cut short "
                    "before its catch-up pass: copying what %s got last", model,
                    self._versions.base, ", ".join(owed))
        sink = MilvusSink(self._store, target)
        with signals.held(_finishing_the_switch):
            self._versions.switch_to(model, self._embedder.dim)  # completes the registry
            for previous in owed:
                self._catch_up(previous, target, sink, report)
        return report

    def _switch(self, model: str, source: str, target: CollectionSpec, sink: MilvusSink,
                report: ReindexReport) -> None:
        """Move the aliases, wait ``settle_s``, copy what the old ingest wrote meanwhile: one
        step, which SIGINT and SIGTERM wait for (:meth:`run`). Cut between the two aliases,
        the images and the states would be of two models; cut after the switch (a kill, a
        crash, an error), the registry says that the catch-up from the previous pair is owed
        (``retiring``, written before the aliases move) and the next ``lookalike reindex``
        runs it. Refused when ``source`` no longer serves (another switch since this run
        started: its passes copied from a pair that no longer takes the writes)."""
        self._lease.renew(check=True)  # still this run's: no other run may switch meanwhile
        self._check_serves(source)
        previous = self._versions.switch_to(model, self._embedder.dim)
        report.switched = True
        self._sleep(self._settle_s)
        if previous is not None:
            self._catch_up(previous, target, sink, report)

    def _catch_up(self, previous: str, target: CollectionSpec, sink: MilvusSink,
                  report: ReindexReport) -> None:
        self._versions.load(previous)  # Milvus Lite releases a renamed collection
        self._pass(len(report.passes) + 1, previous, target, sink, report, after_switch=True)
        sink.flush()
        self._versions.caught_up(previous)
        report.caught_up.append(previous)

    def _check_serves(self, source: str) -> None:
        now = self._versions.serving_unloaded()
        if now is None or now.physical != source:
            where = f"{now.physical} (model {now.model_version})" if now else "nothing"
            raise SourceRetiredError(
                f"{self._versions.base} now serves {where}, not {source}: another switch "
                "happened during this run; its copies stop here (nothing more deleted). "
                "Run reindex again if this model should serve")

    # -- one pass ------------------------------------------------------------------------

    def _pass(
        self, number: int, source: str, target: CollectionSpec, sink: MilvusSink,
        report: ReindexReport, *, after_switch: bool = False,
    ) -> PassReport:
        """Copy what changed in ``source``. Before the switch, also delete what ``source`` no
        longer holds, and stop (:class:`SourceRetiredError`) once ``source`` no longer serves:
        a concurrent reindex switched, and the products only in the target may then be the
        new-model ingest's. After the switch (the catch-up), the target is the serving pair,
        which the new-model ingest writes too: only what is newer in ``source`` is copied,
        and nothing is deleted."""
        started = time.monotonic()
        if not after_switch:
            self._check_serves(source)
        self._keep_lease(after_switch)
        p = PassReport(number, after_switch)
        report.passes.append(p)
        src = self._states(state_name(source))
        dst = self._states(target.state_name)
        foreign = self._foreign_products(target)
        todo = sorted(
            pid for pid, s in src.items()
            if (pid not in dst or dst[pid].version < s.version or pid in foreign
                or (not after_switch and dst[pid].listed != s.listed))
            and self._failed_at.get(pid) != s.version
        )
        gone = [] if after_switch else sorted(set(dst) - set(src))
        p.to_copy = len(todo)
        log.info("reindex pass=%d source_products=%d target_products=%d to_copy=%d to_delete=%d",
                 number, len(src), len(dst), len(todo), len(gone))
        for start in range(0, len(todo), self._chunk):
            chunk = todo[start : start + self._chunk]
            if after_switch:  # what the new-model ingest wrote since the states were read
                newer = read_states(self._store, target.state_name, chunk,
                                    consistency="Strong")
                chunk = [pid for pid in chunk if pid not in newer
                         or newer[pid].version < src[pid].version or pid in foreign]
            self._copy(chunk, src, source, sink, p, report)
            self._keep_lease(after_switch)
            if self._on_chunk is not None:
                self._on_chunk(len(chunk))
        if gone:
            self._check_serves(source)
            self._delete(gone, target, sink)
            p.deleted = len(gone)
        p.seconds = time.monotonic() - started
        log.info("reindex %s", p.summary())
        return p

    def _keep_lease(self, after_switch: bool) -> None:
        """Renew the lease; losing it stops the passes before the switch
        (:class:`LeaseLostError`, caught by :meth:`_run`). After the switch the catch-up goes
        on: the aliases moved, and the run that took the lease over runs it too (the copy is
        idempotent)."""
        try:
            self._lease.renew()
        except LeaseLostError as exc:
            if not after_switch:
                raise
            log.warning("reindex: %s; finishing the catch-up pass anyway", exc)

    def _states(self, collection: str) -> dict[str, ProductState]:
        rows = self._store.scan(collection, 'product_id != ""', STATE_FIELDS,
                                consistency="Strong")
        return {s.product_id: s for s in map(state_of, rows)}

    def _foreign_products(self, target: CollectionSpec) -> set[str]:
        """Products with rows of another model in the target (an old writer that followed the
        alias of a legacy collection during the switch)."""
        where = self._store.expr().compare("model_version", "!=", self._embedder.model_version)
        rows = self._store.scan(target.name, where, ["product_id"], consistency="Strong")
        return {str(r["product_id"]) for r in rows}

    def _copy(
        self, chunk: list[str], src: dict[str, ProductState], source: str, sink: MilvusSink,
        p: PassReport, report: ReindexReport,
    ) -> None:
        rows_by_product: dict[str, dict[str, dict[str, Any]]] = {pid: {} for pid in chunk}
        for row in self._store.query_in(source, "product_id", chunk, _ROW_FIELDS,
                                        consistency="Strong", op="read_source"):
            rows_by_product[str(row["product_id"])][str(row["pk"])] = row

        plan = WritePlan()
        jobs: list[tuple[str, dict[str, Any], Any]] = []
        for pid in chunk:
            state = src[pid]
            if not state.listed:
                plan.delete_products.append(pid)
                plan.states.append(state)
                continue
            for row in rows_by_product[pid].values():
                jobs.append((pid, row, self._pool.submit(self._load, str(row["image_ref"]))))
        images: list[Any] = []  # the model's inputs (or photos, without prepare)
        good: list[tuple[str, dict[str, Any]]] = []
        problems: dict[str, list[ImageProblem]] = {}
        for pid, row, future in jobs:
            try:
                images.append(future.result())
                good.append((pid, row))
            except ItemError as exc:
                problems.setdefault(pid, []).append(
                    ImageProblem(str(row["image_ref"]), exc.reason, exc.detail))
        vectors = self._embed(images)
        records: dict[str, list[ImageRecord]] = {}
        for (pid, row), vector in zip(good, vectors, strict=True):
            if pid in problems and not self._allow_failures:
                continue
            records.setdefault(pid, []).append(ImageRecord.model_validate(
                row | {"vector": [float(x) for x in vector],
                       "model_version": self._embedder.model_version}))
        for pid in chunk:
            state = src[pid]
            if not state.listed:
                continue
            if pid in problems:
                report.failures[pid] = problems[pid]
                self._failed_at[pid] = state.version
                p.failed += 1
                for problem in problems[pid]:
                    log.warning("reindex image failed product_id=%s image=%s reason=%s "
                                "detail=%s", pid, clipped(problem.image_ref, 200), problem.reason,
                                clipped(problem.detail, 300))
                if not self._allow_failures:
                    continue
                if pid not in records:  # listed still, with no image in the new model
                    report.imageless.add(pid)
            else:
                report.failures.pop(pid, None)
                report.imageless.discard(pid)
            kept = records.get(pid, [])
            plan.upserts.extend(kept)
            plan.prune[pid] = {r.pk for r in kept}
            plan.states.append(state)
        if not plan.is_empty():
            sink.apply(plan)
        p.images += len(plan.upserts)
        p.copied += len(plan.states)

    def _load(self, reference: str) -> Any:
        """The stored photo as the model's input (``prepare``, on the pool thread that
        decoded it) when the embedder prepares apart: a chunk then holds one small array a
        photo until its embedder call, not every photo's full decode (16 products of 40
        megapixels were 160 MB a photo); the photo itself otherwise. Decoded (and prepared)
        on the decode pool, as ingest does (:mod:`ingest.load`); fetched on this thread."""
        then: Callable[[Image.Image], Any] = (
            self._prepared.prepare if self._prepared is not None else _same)
        return load_image_ref(self._fetcher, stored_image(reference), then,
                              max_pixels=self._max_pixels, min_size=self._decode_size,
                              decoder=self._decoder)

    def _embed(self, loaded: list[Any]) -> NDArray[np.float32]:
        """Vectors of :meth:`_load`'s results: ``embed_prepared`` of the stacked inputs (what
        ``embed`` computes from the photos, batch for batch), or ``embed`` of the photos."""
        if not loaded:
            return np.zeros((0, self._embedder.dim), np.float32)
        if self._prepared is not None:
            return np.asarray(self._prepared.embed_prepared(np.stack(loaded)), np.float32)
        return np.asarray(self._embedder.embed(loaded), dtype=np.float32)

    def _delete(self, product_ids: list[str], target: CollectionSpec, sink: MilvusSink) -> None:
        sink.apply(WritePlan(delete_products=product_ids))
        self._store.delete_in(target.state_name, "product_id", product_ids, op="delete_states")
