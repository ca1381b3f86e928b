"""Typed visual search over the image collection, for backend developers.

>>> search = ProductSearch(MilvusStore.open("./var/lookalike.db"), spec, embedder,
...                        consistency="Bounded", max_pixels=settings.images.max_pixels)
>>> search.by_image(Path("query.jpg"), k=10, filter=SearchFilter(categories=["Men/Tops"]))
[Hit(product_id='p1', score=0.93, ...), ...]

* One :class:`Hit` per product (its best-matching image). Milvus 2.3 ignores
  ``group_by_field``, so grouping is done here: over-fetch ``4*k`` image rows, keep each
  product's best, and widen the fetch (doubling, up to Milvus' 16384 limit) while fewer than
  ``k`` products came back from a full page.
* A *short* page (fewer rows than asked, fewer than ``k`` products) is not taken as "no more
  matches": an HNSW index under a selective filter drops matches far from the query (seen on
  a 2.3.5 server). The search is repeated without the products found so far, and if that finds
  nothing new while rows still match, those rows (at most :data:`EXACT_MAX_ROWS`) are scored
  exactly. So a filter's matches are returned however far they lie from the query.
* ``score`` is the cosine similarity (1 = same direction, higher is more similar): what
  Milvus servers and milvus-lite both return as ``distance`` for the COSINE metric.
* Only rows embedded by the same model (``model_version``) as the embedder are searched, so
  vectors of different models never mix. When the collection name is an alias that serves
  another model (store/versions.py), searches raise :class:`ModelMismatchError` instead of
  finding nothing: checked at construction, and again when a search fails or comes back empty
  (so a long-running searcher notices a switch without a check per query). Once seen, the
  mismatch is kept: every later search raises it without reading Milvus, until a check (at
  most once per ``model_check_interval_s``) finds this model serving again (the aliases
  moved back); a model switch otherwise needs a restart with the new model's settings.
* Reads use the ``consistency`` the caller chooses (docs/scaling.md): serving searches use
  ``Bounded`` (no wait for the latest time tick: ~8 ms instead of ~200 ms on a 2.3 server);
  paths that must read their own writes just made (tests, the demo, eval) ask for ``Strong``.
* An empty answer or an unknown product is given only after a model check at most
  ``model_check_interval_s`` old (:data:`MODEL_CHECK_INTERVAL_S`): after a switch to a model
  of the same dimension the old model's searches find nothing rather than fail, and that must
  not be read as "no match" for long. An answer with hits costs no check.
* ``match``: ``"exact"`` finds this item in this colour (what a shopper's snapshot wants; the
  default of the image and vector searches), ``"similar"`` the same kind or style in any
  colour (what "more like this" wants; the default of :meth:`ProductSearch.by_product`).
  A ``similar`` photo is embedded in several channel orders (``similar_views``; the scene
  pictures made from it in one: :meth:`ProductSearch.picture_embedders`). See
  search/intent.py.
* An image query whose border does not tell its background (a snapshot) also searches with
  its product cut out on white and with crops of the scene, its windows
  (:meth:`ProductSearch.query_vectors`; ``cutout_queries``, ``window_queries``).
* :meth:`ProductSearch.compare_prices` lists only listings verified to show the same item
  (search/verify.py: local features with a RANSAC homography, colour agreement), each with
  its evidence.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Sequence, Sized
from collections.abc import Set as AbstractSet
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import groupby, islice
from typing import Any, TypeAlias, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from embedding.embedder import Embedder
from lookalike.settings import MAX_K, SearchSettings
from schema.collection import CollectionSpec
from schema.errors import ItemError, Reason
from schema.events import SCHEME
from search.cancel import Cancelled, stop_if
from search.features import KeypointMatch, PhotoFeatures, photo_features
from search.filters import SearchFilter, add_filter
from search.intent import Match, QueryWeighting, check_match, similar_embedder, unit
from search.scene import (
    VERIFY_SIZE,
    WINDOW_SCALES,
    WORKING_SIDE,
    SceneQueries,
    cutouts_of,
    scene_queries,
)
from search.verify import Evidence, Overlay, SameItemVerifier
from store import MAX_RESULT_WINDOW, Consistency, ExpressionBuilder, MilvusStore
from store.engine import search_params
from store.expressions import check_string
from store.versions import ModelVersions

log = logging.getLogger(__name__)

MODEL_CHECK_INTERVAL_S = 1.0
"""Most seconds since the last model check for an empty answer (or an unknown product) to be
given without a new one; also how often a kept mismatch is checked again. A check costs
registry reads (~170 ms Strong on a server), on the request that makes it; it was 30 s, which
served empty answers and 404s for 30 s after each check once another model served."""
_SEARCH_DEFAULTS = SearchSettings()
"""The searches' k and compare_prices' threshold default to the settings' (defined there only)."""
OVERFETCH = 4
COMPARE_DEPTH = 3
"""``compare_prices`` searches ``COMPARE_DEPTH * k`` products and verifies the first ``k``."""
DEEP_MATCHED = 2
"""Of the candidates below the first ``k`` (within a family), the ``DEEP_MATCHED * k`` with the
most keypoint votes are matched geometrically (:meth:`SameItemVerifier.keypoint_votes`)."""
SECOND_PAGE_MATCHED = 10
"""Of the candidates below the first ``k`` that are not a family, those with the most
keypoint votes matched geometrically (:func:`_second_page`; ~3 ms a pair once cached)."""
CROWDED_SHARE = 0.5
"""Share of the ``k`` most similar candidates with the rule's ``min_inliers`` from which they
count as a family of look-alikes (one pack layout's flavours and lines): the item itself may
then rank below them by vector."""
SHORT_PAGE_ROUNDS = 3
"""Searches without the products found so far, after a short page."""
EXACT_MAX_ROWS = 8192
"""Most matching rows scored exactly when the index keeps answering short (vectors fetched)."""
MAX_QUERY_VECTORS = 16
"""Views one multi-image query may have (each is searched; Milvus caps nq far higher)."""
MAX_SEARCH_VECTORS = MAX_QUERY_VECTORS * (4 + 5 * len(WINDOW_SCALES))
"""Query vectors one search may have: for each view its own, its own under catalog light,
its cut-outs' (the product on white, and square-on), its windows'."""
RERANK_DEPTH = 40
"""An image search checks the geometry of its first this many products
(:meth:`ProductSearch.rerank`). 40 since shelves and bins (20 before): where a photo shows many
copies of a pack, its vector ranks the pack's look-alikes as near as the pack itself, and the
pack was 21st to 40th for 7% of packs-shelf's queries (docs/matching.md, "Every copy
counted")."""
RERANK_MIN_INLIERS = 12
"""Inliers that make a product's geometry agree with the query's: it then ranks above those
whose geometry does not (the verifier's own floor is 10; see docs/matching.md)."""
RERANK_BUDGET_S = 1.0
"""How long an image search waits for the listing photos it re-ranks by to be read (those
not cached: fetched, decoded, keypoints found, ``RERANK_READERS`` at once). A photo not read
by then counts as unchecked this time and is cached when it arrives: a slow or hung image
server delays a search by this much at most, not by its fetch deadline per photo."""
RERANK_READERS = 4
"""Listing photos a search process reads at once for its re-rankings (one pool per search)."""
RERANK_WEIGHT = 0.2
"""Among products whose geometry agrees, each ranks by its similarity plus this much times
``log(1 + inliers) / log(101)``: the print of a pack's flavour, which its look-alikes share
the layout of, decides where the colour (already in the similarity) does not."""
TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
"""The quarter turns a query photo is tried at (:meth:`ProductSearch._upright`)."""
TURN_MARGIN = 0.05
"""How much closer a turned query photo's nearest listing must be than the photo's own for
the photo to count as saved sideways or upside down. Upright photos edited with a collage,
a mirror and vivid colours came within 0.048; turned ones cleared it by 0.048-0.25 on
same-item-blind and 0.058-0.25 on same-item-packs-turned. Fashion-MNIST's upright re-shoots
came within 0.09 (11 of 300 past 0.05): a photo taken as turned is therefore searched and
verified as given too (docs/matching.md, "Turned photos")."""
MAX_PRODUCT_IMAGES = 1024
"""Most stored images read for one product (its vectors, its similarity to a query)."""
CORROBORATE_MAX = 8
"""Refused candidates (those sharing the most keypoints with the query first) compared with
the listing that matched the query best (:func:`_corroborate`): each comparison is one
verification of two listing photos, ~5-20 ms."""
ANCHOR_NEIGHBOURS = 20
"""Products nearest the anchor's photos by vector added to the candidates the query's
verification did not reach (:meth:`ProductSearch._vouched_below`)."""
ANCHOR_COMPARED = 8
"""Of those, the ones with the most keypoint votes from the anchor's photo compared with it."""
SIDEWAYS_NEIGHBOURS = 10
"""Products nearest the query photo's quarter turns by vector (the turns that did not set it
upright) added to those candidates too: another shop's listing saved sideways is far from
the query and from the anchor by vector, as a query saved sideways is from its listings, and
near the query turned the same way (:meth:`ProductSearch._vouched_below`)."""

ImageInput: TypeAlias = bytes | str | os.PathLike[str] | Image.Image
_Item = TypeVar("_Item")
_Score = TypeVar("_Score")
"""What a candidate carries beside its row: its similarity to the query, where known."""
ImageLoader: TypeAlias = Callable[[ImageInput, int], Image.Image]

_HIT_FIELDS = [
    "product_id",
    "title",
    "category",
    "price",
    "currency",
    "seller_id",
    "image_ref",
    "image_key",
    "version",
]


class ModelMismatchError(RuntimeError):
    """The collection serves vectors of another model than the searcher's embedder."""


class ProductNotFound(LookupError):
    """No stored images for this product id (for this embedding model)."""

    def __init__(self, product_id: str, model_version: str) -> None:
        super().__init__(
            f"product {product_id!r} has no images embedded with model {model_version!r}"
        )
        self.product_id = product_id


class StoredPhotoUnreadable(ItemError):
    """Price comparison cannot read the stored listing photos it verifies with (the image
    roots, the egress policy, a gone URL): the catalog's or the configuration's problem, not
    the query's. ``reason`` is the photo's own (``path_not_allowed``, ``not_found``...);
    ``unread`` says which photos could not be read without the photo's own detail ("none of
    the 60 candidate listings' photos could be read"), ``ref`` the first of them."""

    def __init__(self, reason: Reason, detail: str, *, unread: str = "",
                 ref: str = "") -> None:
        super().__init__(reason, detail)
        self.unread = unread or detail
        self.ref = ref


class Hit(BaseModel):
    """One product, represented by its best-matching image."""

    model_config = ConfigDict(frozen=True)

    product_id: str
    score: float
    """Cosine similarity of the product's best image to the query (higher = more similar)."""
    title: str
    category: str
    price: float
    currency: str
    image_ref: str
    image_key: str
    inliers: int | None = None
    """Geometric inliers between the query photo and ``image_ref`` when the search checked
    them (:meth:`ProductSearch.rerank`: an image search's first products); None
    otherwise."""


class PriceMatch(BaseModel):
    """A listing verified to show the query's item, for price comparison, with why."""

    model_config = ConfigDict(frozen=True)

    product_id: str
    similarity: float
    """Cosine of the listing's best image to the query (the exact, colour-aware vector)."""
    inliers: int
    """Keypoint matches consistent with one homography between the two photos."""
    colour_agreement: float
    """Cosine of the two photos' foreground colour histograms."""
    correlation: float | None
    """Grey-level correlation of the photos aligned by the homography (None without one)."""
    colour_shift: float | None
    """Chroma change between the aligned photos, as the rule measures it (None without one)."""
    reason: str
    """Why it counts as the same item, in words."""
    via: str | None = None
    """The listing (product id) through which it matched: None when its photo matched the
    query's; else the listing that did, and ``inliers``, ``correlation`` and
    ``colour_shift`` compare this listing's photo with that one's."""
    price: float
    currency: str
    title: str
    category: str
    seller_id: str
    image_ref: str
    image_key: str


@dataclass
class CompareTrace:
    """What one :meth:`ProductSearch.compare_prices` call weighed, for an evaluation's details
    (its ``trace``; filled only when one is passed, so a plain call pays nothing):
    ``candidates``, the products of its vector search (the deeper one below a family), most
    similar first, each (product_id, cosine), threshold not applied; ``verified``, every
    listing it judged, accepted or refused, with its evidence (a refusal's ``reason`` and
    ``inliers`` included). Nothing in it changes what the call returns."""

    candidates: list[tuple[str, float]] = field(default_factory=list)
    verified: list[tuple[str, Evidence]] = field(default_factory=list)


def _default_loader(
    source: ImageInput, max_pixels: int, min_size: int | None = None,
    max_bytes: int | None = None,
) -> Image.Image:
    return _load_scales(source, max_pixels, [min_size], max_bytes)[0]


def _working(image: Image.Image) -> Image.Image:
    """``image`` shrunk to ``WORKING_SIDE`` when longer (:func:`embedding.decode.shrink_to`)."""
    from embedding.decode import shrink_to

    shrunk: Image.Image = shrink_to(image, WORKING_SIDE)
    return shrunk


def _load_scales(source: ImageInput, max_pixels: int, min_sizes: Sequence[int | None],
                 max_bytes: int | None = None) -> list[Image.Image]:
    """A query photo loaded for each of ``min_sizes`` (the scale a JPEG decodes at), decoded
    once where the scales agree (all formats but JPEG: :func:`embedding.decode.load_images`)."""
    from embedding.decode import load_images

    if isinstance(source, str | os.PathLike):
        _check_query_path(str(os.fspath(source)))
    images: list[Image.Image] = load_images(source, max_pixels, min_sizes, max_bytes=max_bytes)
    return images


def _check_query_path(path: str) -> None:
    """A query photo's path as the caller's own file (read as ``open()`` would, a regular
    file only: :func:`embedding.decode.load_images`), or a one-line :class:`ItemError`: search
    fetches no URL (the catalog's photos are the fetcher's, under its egress policy), and an
    empty path or one with a NUL byte names no file."""
    if not path:
        raise ItemError(Reason.BAD_REFERENCE, "empty path: give the photo's bytes or the path "
                        "of an image file")
    if SCHEME.match(path):  # a query photo's path never starts as a URL does
        raise ItemError(Reason.BAD_REFERENCE, f"{path[:200]!r}: search does not fetch URLs; "
                        "pass the photo's bytes or a local file path")
    if "\x00" in path:
        # open() raises a bare ValueError("embedded null byte"), not an unreadable image
        raise ItemError(Reason.UNREADABLE, f"{path!r}: a path cannot hold a NUL byte")


def _of_view(error: ItemError, n: int, count: int) -> ItemError:
    """``error`` of query photo ``n`` (from 0) of ``count``, saying which when there are
    several ("empty image data" named none of three)."""
    if count == 1:
        return error
    return ItemError(error.reason, f"view {n + 1} of {count}: {error.detail}")


def _check_images(images: Iterable[ImageInput], most: int | None = None) -> list[ImageInput]:
    """``images`` as the list of images it must be (a generator or any iterable too, read no
    further than one past ``most``: :func:`_listed`): one image (a path, bytes, a PIL image)
    is refused, not taken for its characters or bytes ("x.jpg" searched as five one-letter
    paths)."""
    if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike | Image.Image):
        raise TypeError(f"images must be a sequence of images (a list), not one "
                        f"{type(images).__name__}: use by_image for a single image")
    return _listed(images, most, "images", "query images")


def _listed(items: Iterable[_Item], most: int | None, name: str, what: str) -> list[_Item]:
    """``items`` (a list, a tuple, a generator, any iterable: ``name`` says what the argument
    holds) as a list; more than ``most`` (None: no limit) ``what`` is a ValueError, and an
    iterable without a length is read no further than one past ``most`` to tell."""
    if not isinstance(items, Iterable):
        raise TypeError(f"{name} must be a sequence of {name} (a list), not "
                        f"{type(items).__name__}")
    if isinstance(items, Sized):
        if most is not None and len(items) > most:
            raise ValueError(f"at most {most} {what}, got {len(items)}")
        return list(items)
    taken = list(items if most is None else islice(items, most + 1))
    if most is not None and len(taken) > most:
        raise ValueError(f"at most {most} {what}, got more")
    return taken


def _check_filter(search_filter: SearchFilter | None) -> SearchFilter | None:
    if search_filter is not None and not isinstance(search_filter, SearchFilter):
        raise TypeError(f"filter must be a search.filters.SearchFilter (or None), not "
                        f"{type(search_filter).__name__}: SearchFilter(**your_dict) makes one")
    return search_filter


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number (a cosine similarity in [-1, 1]), not "
                        f"{type(threshold).__name__} ({threshold!r:.40})")
    if not (-1.0 <= threshold <= 1.0 and math.isfinite(threshold)):  # a huge int: False first
        shown = (threshold if not isinstance(threshold, int) or threshold.bit_length() < 64
                 else "a larger integer")  # printing one of 4,301+ digits raises
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {shown}")
    return float(threshold)


class ProductSearch:
    """Search the collections of ``spec`` with vectors from ``embedder``."""

    def __init__(
        self,
        store: MilvusStore,
        spec: CollectionSpec,
        embedder: Embedder,
        *,
        consistency: Consistency,
        max_pixels: int,
        max_bytes: int | None = None,
        image_loader: ImageLoader | None = None,
        model_check_interval_s: float = MODEL_CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        verifier: SameItemVerifier | None = None,
        cutout_queries: bool = True,
        window_queries: bool = True,
        light_queries: bool = True,
        rerank: bool = True,
        rerank_depth: int = RERANK_DEPTH,
        rerank_budget_s: float | None = RERANK_BUDGET_S,
        turned_queries: bool = True,
        family_depth: int = _SEARCH_DEFAULTS.family_depth,
        similar_views: int = _SEARCH_DEFAULTS.similar_views,
    ) -> None:
        """``max_bytes``: a query photo given as a file path larger than this is refused
        before it is read (``LOOKALIKE_IMAGES__MAX_BYTES``; the HTTP API caps uploads itself).
        ``verifier`` loads stored listing photos for :meth:`compare_prices`
        (``lookalike.app.build_verifier``: through the configured fetcher). Without one,
        :meth:`compare_prices` refuses to run: a verifier of its own would fetch with a fetch
        policy other than the configured one (its egress allow-lists, roots, byte cap).
        ``cutout_queries``: image searches also search with a photo's segmented product on
        white when its border does not tell its background (:meth:`by_image`);
        ``window_queries``: ...and with its :func:`search.scene.windows`;
        ``light_queries``: ...and under catalog light, its cut-out and windows cut from
        that (:func:`search.scene.white_patch`); ``rerank``: an image search checks the
        geometry of its first ``rerank_depth`` products (:meth:`rerank`; needs
        ``verifier``), waiting ``rerank_budget_s`` at most for listing photos to be read
        (None: for all of them, as ``lookalike eval`` does, whose figures must not depend on
        the machine's speed); ``turned_queries``: price comparison also tries the photo at
        its quarter turns and, when one is clearly nearer the catalog, searches and verifies
        it turned upright as well (:meth:`_upright`); ``family_depth``: when the first
        candidates of a price comparison are a family of look-alikes, the products it
        searches (:func:`_look_deeper`; no deeper than ``COMPARE_DEPTH * k`` when smaller);
        ``similar_views``: a ``similar`` image search embeds each photo (not the scene
        pictures made from it: :meth:`picture_embedders`) in this many channel orders and
        searches with their mean (:class:`search.intent.SimilarViews`; 1: the photo
        alone)."""
        if family_depth < 0:
            raise ValueError(f"family_depth must be >= 0, got {family_depth}")
        if not 1 <= rerank_depth <= MAX_K:
            raise ValueError(f"rerank_depth must be 1 to {MAX_K}, got {rerank_depth}")
        if embedder.dim != spec.dim:
            raise ValueError(
                f"embedder produces {embedder.dim}-d vectors but collection {spec.name!r} "
                f"holds {spec.dim}-d ones"
            )
        check_string(embedder.model_version, "model_version")
        self._store = store
        self._spec = spec
        self._embedder = embedder
        self._similar_embedder = similar_embedder(embedder, similar_views)
        self._consistency = consistency
        self._max_pixels = max_pixels
        self.engine = store.engine
        # Decode query JPEGs at the reduced scale ingest uses, so both see the same pixels.
        self._decode_size: int | None = getattr(embedder, "decode_size", None)
        self._max_bytes = max_bytes
        self._image_loader = image_loader
        self._load: ImageLoader = image_loader or partial(
            _default_loader, min_size=self._decode_size, max_bytes=max_bytes)
        self._weighting = QueryWeighting(spec.dim, float(getattr(embedder, "colour_weight", 0)))
        self._verifier = verifier
        self._turned_queries = turned_queries
        self._family_depth = family_depth
        self._cutout_queries = cutout_queries
        self._window_queries = window_queries
        self._light_queries = light_queries
        self._rerank = rerank and verifier is not None
        self._rerank_depth = rerank_depth
        self._rerank_budget_s = rerank_budget_s
        self._readers = (ThreadPoolExecutor(RERANK_READERS, thread_name_prefix="rerank-read")
                         if verifier is not None else None)
        self._versions = ModelVersions(store, spec.name)
        self._check_interval_s = model_check_interval_s
        self._clock = clock
        self._checked_at = clock()
        self._warned_roots = False
        """Whether :meth:`rerank` said that listing photos are outside the image roots."""
        self._mismatch: str | None = None
        """Why another model serves, once a check found it (:meth:`check_model`)."""
        self.short_page_recoveries = 0
        """Searches whose short page was completed by exact scoring (for tests and benches)."""
        self.turned_photos = 0
        """Price comparisons whose photo was taken as turned (:meth:`_upright`)."""
        self.check_model(announce=False)  # its error is the caller's to report, once

    @property
    def query_decode_sizes(self) -> tuple[int | None, ...]:
        """The squares a query photo is decoded to cover (the model's and ``VERIFY_SIZE``,
        as :meth:`_load_views` decodes it): a JPEG is decoded once per reduced scale that
        covers one (:func:`embedding.decode.decode_images`); the model's is None when it
        names no size (a JPEG decoded at full size and again at the verifier's scale)."""
        return (self._decode_size, VERIFY_SIZE)

    @property
    def consistency(self) -> Consistency:
        """The consistency level of every read of this searcher."""
        return self._consistency

    def _confirm_model(self) -> None:
        """Before an empty answer or an unknown product: :meth:`check_model` unless it ran
        within the interval (an empty answer is usually just an empty answer, and each check
        costs registry reads). Concurrent callers within the interval do not wait for the
        check one of them runs."""
        if self._clock() - self._checked_at >= self._check_interval_s:
            self.check_model()

    def _refuse_if_mismatched(self) -> None:
        """Raise the mismatch a check found, without reading Milvus; after the interval, check
        again instead (the aliases may have moved back to this model)."""
        if self._mismatch is None:
            return
        if self._clock() - self._checked_at >= self._check_interval_s:
            self.check_model()
            return
        raise ModelMismatchError(self._mismatch)

    def check_model(self, *, announce: bool = True) -> None:
        """Raise :class:`ModelMismatchError` when ``spec.name`` is an alias serving another
        model, or a plain (pre-alias) collection without a single row of this model: such a
        collection may hold several versions, so only an absent one is an error. The answer
        is kept: a mismatch refuses every later search until a check finds this model again.
        A check that cannot run (Milvus down) changes nothing. ``announce``: log the change
        when searches start being refused (an ERROR, once: a server's searches then fail
        one by one); not for the constructor's check, whose error the caller reports (the
        CLI printed the same text twice)."""
        self._checked_at = self._clock()
        try:
            self._check_serving_model()
        except ModelMismatchError as exc:
            if self._mismatch is None and announce:
                log.error("search refused from now on: %s", exc)
            self._mismatch = str(exc)
            raise
        if self._mismatch is not None:
            log.warning("this searcher's model %s serves again: searches resume",
                        self._embedder.model_version)
        self._mismatch = None

    def _check_serving_model(self) -> None:
        serving = self._versions.serving()
        if serving is None or serving.model_version is None:
            return
        mine = self._embedder.model_version
        if serving.legacy:
            if serving.model_version == mine or self._has_rows_of_my_model():
                return
            raise ModelMismatchError(
                f"collection {self._spec.name} holds no vectors of model {mine} (it was "
                f"written with {serving.model_version}). Re-embed it with `lookalike reindex`, "
                "or search with that model."
            )
        if serving.model_version != mine:
            raise ModelMismatchError(
                f"collection {self._spec.name} serves model {serving.model_version} "
                f"({serving.physical}); this searcher embeds with "
                f"{self._embedder.model_version}. Use that model, or switch with "
                "`lookalike reindex`."
            )

    # -- public ------------------------------------------------------------------------

    def by_image(
        self, image: ImageInput, k: int = _SEARCH_DEFAULTS.k, filter: SearchFilter | None = None,
        match: Match = "exact",
    ) -> list[Hit]:
        """Products that look like ``image`` (bytes, a file path or a PIL image).

        A photo whose border does not tell its background (a shopper's snapshot, a pack
        re-shot on a backdrop) is also searched with its product cut out on white
        (:func:`search.scene.cutouts`; a flat face seen at an angle, such as a pack's front,
        also turned square-on), as catalogs show products, and with ten crops of the
        scene (:func:`search.scene.windows`), one of which a product that fills part of the
        photo fills; each product scores by its best match over them all (docs/matching.md,
        "Cut-out queries", "Window queries", "Square-on fronts and fainter keypoints"). A
        photo on white or on a pad searches with itself only."""
        return self.by_images([image], k, filter, match)

    def by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = _SEARCH_DEFAULTS.k,
        filter: SearchFilter | None = None,
        match: Match = "exact",
    ) -> list[Hit]:
        """Products whose images are closest to ``vector`` (from the same embedder)."""
        return self.by_vectors([vector], k, filter, match)

    def by_images(
        self, images: Iterable[ImageInput], k: int = _SEARCH_DEFAULTS.k,
        filter: SearchFilter | None = None,
        match: Match = "exact",
        cancelled: Cancelled | None = None,
    ) -> list[Hit]:
        """Products that look like any of ``images`` (several views of one item: front, back,
        a close-up), each scored by its best match over all of them (and their cut-outs and
        windows, as :meth:`by_image`). Up to ``MAX_QUERY_VECTORS``, in a list or any
        iterable (a generator is read no further than one past the limit). ``cancelled``:
        asked before each photo, the search and the re-ranking (search/cancel.py)."""
        images = _check_images(images, MAX_QUERY_VECTORS)
        if not images:
            raise ValueError("at least one image is needed")
        match = check_match(match)
        vectors: list[list[float]] = []
        photos: list[PhotoFeatures] | None = [] if self._rerank else None
        for n, image in enumerate(images):  # one photo at a time: what is kept of each is small
            stop_if(cancelled, f"reading query photo {n + 1} of {len(images)}")
            try:
                if photos is None:
                    vectors += self._photo_vectors(self._load(image, self._max_pixels), match)
                    continue
                shown, to_verify = self._load_views(image)
            except ItemError as exc:
                raise _of_view(exc, n, len(images)) from None
            photos.append(photo_features(to_verify, segment=False))  # from the decode itself
            del to_verify  # (``shown`` itself for all formats but JPEG)
            vectors += self._photo_vectors(shown, match)
            del shown  # before the next photo is decoded
        stop_if(cancelled, "the vector search")
        return self._hits(vectors, k, filter, match, (), photos, cancelled)

    def rerank(self, hits: Sequence[Hit], photos: Sequence[PhotoFeatures], k: int) -> list[Hit]:
        """The first ``k`` of ``hits`` once the geometry of the first ``rerank_depth`` is
        checked against the query's ``photos`` (:meth:`SameItemVerifier.keypoint_matches`,
        the listing photos read and cached as price comparison reads them). Those with
        ``RERANK_MIN_INLIERS`` or more rank first, by similarity plus ``RERANK_WEIGHT`` times
        ``log(1 + inliers) / log(101)``; the others follow in their order. Another photo of
        the same item (a re-shot pack, a product on a backdrop) shares its print with the
        listing, a look-alike its shape or layout at most (docs/matching.md, "Geometric
        re-ranking"); a shelf or a pile of the product shares it copy by copy
        (``copies``, "Shelves and piles"). Each checked hit carries its ``inliers`` (None:
        its photo was not read within the budget, or could not be); scores are unchanged."""
        verifier, readers = self._verifier, self._readers
        if verifier is None or readers is None:
            raise ValueError("rerank needs a same-item verifier (lookalike.app.build_search)")
        head = list(hits[:self._rerank_depth])
        reading = _start_reading(verifier, (h.image_ref for h in head), readers)
        done, late = wait(reading.values(), timeout=self._rerank_budget_s)
        if late:
            log.warning("re-ranking without %d of %d listing photos, not read within %.1f s",
                        len(late), len(reading), self._rerank_budget_s or 0.0)
        ready = [ref for ref, f in reading.items() if f in done and f.exception() is None]
        self._warn_outside_roots(reading, done)
        found: dict[str, int | None] = {ref: 0 if ref in ready else None for ref in reading}
        for photo in photos:
            for ref, match in zip(ready, verifier.keypoint_matches(photo, ready, copies=True),
                                  strict=True):
                found[ref] = max(found[ref] or 0, match[0] if match is not None else 0)
        checked = [h.model_copy(update={"inliers": found[h.image_ref]}) for h in head]
        agree = sorted((h for h in checked if (h.inliers or 0) >= RERANK_MIN_INLIERS),
                       key=lambda h: -(h.score + RERANK_WEIGHT * math.log1p(h.inliers or 0)
                                       / math.log(101)))
        rest = [h for h in checked if (h.inliers or 0) < RERANK_MIN_INLIERS]
        return [*agree, *rest, *hits[self._rerank_depth:]][: _check_k(k)]

    def _warn_outside_roots(self, reading: dict[str, Future[PhotoFeatures]],
                            done: AbstractSet[Future[PhotoFeatures]]) -> None:
        """One warning, the first time listing photos could not be re-ranked because they
        are local paths outside the image roots (``path_not_allowed``): such a search still
        answers, in cosine order, and nothing else said why (the roots guard a server
        against hostile events, so they are not set by default)."""
        if self._warned_roots:
            return
        outside = [ref for ref, f in reading.items() if f in done
                   and isinstance(error := f.exception(), ItemError)
                   and error.reason is Reason.PATH_NOT_ALLOWED]
        if outside:
            self._warned_roots = True
            log.warning("re-ranking skipped for %d of %d listing photos: they are local paths "
                        "outside the image roots (path_not_allowed); pass --image-root DIR or "
                        "set LOOKALIKE_IMAGES__ROOTS to the catalog's photo folders",
                        len(outside), len(reading))

    def by_vectors(
        self,
        vectors: Iterable[Sequence[float] | np.ndarray],
        k: int = _SEARCH_DEFAULTS.k,
        filter: SearchFilter | None = None,
        match: Match = "exact",
        photos: Sequence[PhotoFeatures] | None = None,
    ) -> list[Hit]:
        """Products closest to any of ``vectors``, each scored by its best match (one search
        with all of them, so a product found by two views is one hit). Up to
        ``MAX_SEARCH_VECTORS``: what :meth:`by_images` searches with for its most photos
        (:meth:`query_vectors`), for a caller that embeds them itself (``lookalike eval``,
        through its cache). ``photos``: the query photos' keypoints, to re-rank by as
        :meth:`by_images` does (:meth:`rerank`; when this search re-ranks). A list or any
        iterable of vectors (a generator is read no further than one past the limit)."""
        listed = _listed(vectors, MAX_SEARCH_VECTORS, "vectors", "query vectors")
        if not listed:
            raise ValueError("at least one vector (or image) is needed")
        return self._hits([self._check_vector(v) for v in listed], k, filter, match, (),
                          photos)

    def by_product(
        self, product_id: str, k: int = _SEARCH_DEFAULTS.k, filter: SearchFilter | None = None,
        match: Match = "similar",
    ) -> list[Hit]:
        """More like this: products similar to any image of ``product_id`` (never itself).

        ``similar`` by default: the product itself is left out, so what remains worth showing
        is the same kind or style, and colour would rank other garments of its colour first.
        Raises :class:`ProductNotFound` when the product has no stored images.
        """
        vectors = [v for v, _ in self._product_images(product_id)]
        return self._hits(vectors, k, filter, match, (product_id,))

    def compare_prices(
        self,
        image: ImageInput | None = None,
        product_id: str | None = None,
        threshold: float = _SEARCH_DEFAULTS.compare_threshold,
        k: int = _SEARCH_DEFAULTS.compare_k,
        filter: SearchFilter | None = None,
        cancelled: Cancelled | None = None,
        trace: CompareTrace | None = None,
    ) -> list[PriceMatch]:
        """Listings of the same item, cheapest first, each with the evidence that it is.

        Give exactly one of ``image`` or ``product_id`` (the product itself is left out). The
        ``k`` most similar products (``exact`` intent) with similarity >= ``threshold`` are
        verified one by one (search/verify.py); those that pass are returned, sorted by price
        (then by similarity). When most of those ``k`` match the query's geometry (a family of
        look-alikes: one pack layout's flavours), those ``k`` must also agree in print and only
        a cover is forgiven (``overlay="covers"``), and the products below them, down to
        ``family_depth`` products, are ranked by their geometric inliers (the
        ``DEEP_MATCHED * k`` with the most keypoint votes) and the ``k`` best verified too
        (:func:`_look_deeper`). When they are not a family, the rest of the candidates with the
        most keypoint votes are matched and verified (:func:`_second_page`). A candidate refused
        against the query may be vouched for by the listing that matched it best
        (:func:`_corroborate`; its match says ``via``), and so may the listings below the
        candidates verified against the query that it matches itself (:meth:`_vouched_below`).
        A photo re-shot on a backdrop (one with a segmented product) also searches with its
        product on white and, a flat face seen at an angle, with that face square-on
        (:func:`search.scene.cutouts_of`); a candidate's
        similarity is the best of them. A photo saved sideways or upside down (one of its
        quarter turns clearly nearer the catalog: :meth:`_upright`) also searches turned
        upright, and is cut out and verified both upright and as it is. Prices are not converted
        between currencies: pass ``filter=SearchFilter(currency=...)`` to compare like with
        like. ``cancelled``: asked between the stages and before each of the first ``k``
        candidates is verified; :class:`~search.cancel.SearchCancelled` once the caller is
        gone (search/cancel.py). ``trace``, when given, is filled with the candidates and every
        listing judged, refused ones included (:class:`CompareTrace`: why a listing is missing).
        """
        if (image is None) == (product_id is None):
            raise ValueError("give exactly one of image or product_id")
        verifier = self._verifier
        if verifier is None:
            raise ValueError("compare_prices needs a same-item verifier: build the search with "
                             "lookalike.app.build_search, or pass "
                             "verifier=lookalike.app.build_verifier(settings)")
        threshold = _check_threshold(threshold)
        filter = _check_filter(filter)
        k = _check_k(k)
        exclude: tuple[str, ...] = ()
        searched: list[list[float]] = []
        turned: list[list[float]] = []  # the query's quarter turns not searched with
        if product_id is not None:
            stored = self._product_images(product_id)
            searched = [v for v, _ in stored]
            try:
                queries = [verifier.gallery_features(ref) for _, ref in stored]
            except Exception as exc:
                raise _stored_unreadable(
                    exc, f"a stored photo of {product_id!r}",
                    f"the photos of {product_id!r} could not be read") from exc
            exclude = (product_id,)
        else:
            assert image is not None
            shown, picture = self._load_views(image)
            stop_if(cancelled, "the query photo's turns, keypoints and cut-outs")
            to_verify = [picture]
            if self._turned_queries:
                turn, quarters = self._upright(shown, filter)
                if turn is None:
                    searched, turned = quarters[:1], quarters[1:]
                else:  # saved sideways (or so it seems): the photo upright, and as it is
                    searched = [quarters[1 + TURNS.index(turn)], quarters[0]]
                    turned = [v for n, v in enumerate(quarters[1:]) if TURNS[n] != turn]
                    to_verify.insert(0, picture.transpose(turn))
            queries = [photo_features(p, keep_grey=True) for p in to_verify]
            to_cut = [_working(p) for p in to_verify]
            del to_verify, picture  # but ``shown`` (the same decode but for a JPEG)
            # A photo re-shot on a backdrop: its product on white (and a flat face seen at an
            # angle, turned square-on) finds the catalog photo.
            pictures = [self._load(cut, self._max_pixels)
                        for p, q in zip(to_cut, queries, strict=True)
                        for cut in cutouts_of(p, q.product)]
            if not searched:
                pictures.insert(0, shown)
            searched += self._embed_pictures(pictures) if pictures else []
        stop_if(cancelled, "the vector search")
        best = self._search(searched, k * COMPARE_DEPTH, filter, exclude=exclude)
        if trace is not None:
            trace.candidates = [(str(row["product_id"]), score) for row, score in best]
        # Most similar first: the per-query budget of keypoint-free alignments goes to them.
        candidates = _most_similar_first(best, threshold)
        stop_if(cancelled, "reading the candidates' photos")
        unreadable = _read_candidates(verifier, candidates, self._readers)
        first, rest = candidates[:k], candidates[k:]
        refs = [(str(row["image_ref"]), score) for row, score in first]
        stop_if(cancelled, "matching the candidates' keypoints")
        matched = [_keypoint_matches(verifier, q, [ref for ref, _ in refs], unreadable)
                   for q in queries]
        crowded = sum(_most_inliers(matched, n) >= verifier.rule.min_inliers
                      for n in range(len(refs)))
        family = crowded >= CROWDED_SHARE * k
        # Within a family of look-alikes (two products or more share the query's geometry),
        # the print must agree and only a cover is forgiven.
        strict = family and crowded >= 2
        per_query = [verifier.verify(q, refs, m, print_check=strict,
                                     overlay="covers" if strict else "open", cancelled=cancelled)
                     for q, m in zip(queries, matched, strict=True)]
        verified = [(row, _strongest(found[n] for found in per_query))
                    for n, (row, _) in enumerate(first)]
        stop_if(cancelled, "the candidates below the first k")
        # A full first page of a family may go on below it: look further.
        if family and len(best) >= k * COMPARE_DEPTH and self._family_depth > len(best):
            deeper = self._search(searched, self._family_depth, filter, exclude=exclude)
            rest = _most_similar_first(deeper, threshold)[k:]
            if trace is not None:
                trace.candidates = [(str(row["product_id"]), score) for row, score in deeper]
        if rest and family:
            verified += _look_deeper(verifier, queries, rest, k, self._readers, unreadable)
        elif rest:
            verified += _second_page(verifier, queries, rest, self._readers, unreadable)
        stop_if(cancelled, "corroborating the refused candidates")
        verified = _corroborate(verifier, verified)
        stop_if(cancelled, "the listings the anchor vouches for")
        # The anchor's own candidates: the query's down to the first search's depth (below
        # a family, the deeper look has voted on the hundreds further down already).
        verified += self._vouched_below(verifier, verified, rest[:k * (COMPARE_DEPTH - 1)],
                                        searched, threshold, filter, exclude, turned)
        if trace is not None:
            trace.verified = [(str(row["product_id"]), e) for row, e in verified]
        matches = [_price_match(row, e) for row, e in verified if e.same_item]
        matches.sort(key=lambda m: (m.price, -m.similarity, m.product_id))
        return matches

    # -- internals ---------------------------------------------------------------------

    def _vouched_below(self, verifier: SameItemVerifier,
                       verified: Sequence[tuple[dict[str, Any], Evidence]],
                       unjudged: Sequence[tuple[dict[str, Any], float]],
                       searched: list[list[float]], threshold: float,
                       search_filter: SearchFilter | None, exclude: Sequence[str],
                       turned: Sequence[list[float]] = ()
                       ) -> list[tuple[dict[str, Any], Evidence]]:
        """Listings the query's own verification did not reach, vouched for by the anchor.

        Another shop's edited copy of the item can share too few keypoints with an edited
        query to be matched, or sit below the query's candidates by vector (the two edits
        compound), while it shares many with the listing that matched (the anchor,
        :func:`_anchor`). The candidates not judged (``unjudged``) and the
        ``ANCHOR_NEIGHBOURS`` products nearest the anchor's photos by vector are ranked by
        keypoint votes from the anchor's photo, and so are the ``SIDEWAYS_NEIGHBOURS``
        nearest the query photo's quarter turns (``turned``: a listing saved sideways); the
        ``ANCHOR_COMPARED`` with the most are compared with it as :func:`_corroborate` does
        (the same rule, print check asked, overlay, near-identical and keypoint-free routes
        closed). Those that pass, with a similarity to the query (the best over its turns) of
        ``threshold`` or more, are listed ``via`` the anchor."""
        anchor = _anchor(verified)
        if anchor is None or ANCHOR_COMPARED == 0:
            return []
        anchor_row = verified[anchor][0]
        anchor_id = str(anchor_row["product_id"])
        try:
            anchor_photo = verifier.gallery_features(str(anchor_row["image_ref"]))
            stored = self._product_images(anchor_id)
        except Exception:  # delisted or unreadable since: it vouches for nothing
            return []
        seen = {str(row["product_id"]) for row, _ in verified}
        pool: list[tuple[dict[str, Any], float | None]] = [
            (row, score) for row, score in unjudged if str(row["product_id"]) not in seen]
        seen.update(str(row["product_id"]) for row, _ in pool)
        near = self._search([v for v, _ in stored], ANCHOR_NEIGHBOURS, search_filter,
                            exclude=[*exclude, *seen])
        pool += [(row, None) for row, _ in near]
        if turned and SIDEWAYS_NEIGHBOURS:
            seen.update(str(row["product_id"]) for row, _ in near)
            sideways = self._search(list(turned), SIDEWAYS_NEIGHBOURS, search_filter,
                                    exclude=[*exclude, *seen])
            pool += [(row, None) for row, _ in sideways]
        chosen = _most_voted(verifier, [anchor_photo], pool, ANCHOR_COMPARED, self._readers,
                             voted_only=True)
        matched = verifier.keypoint_matches(anchor_photo,
                                            [str(row["image_ref"]) for row, _ in chosen])
        passed: list[tuple[dict[str, Any], float | None, Evidence]] = []
        for (row, score), match in zip(chosen, matched, strict=True):
            if match is None or match[0] < verifier.rule.min_inliers:
                continue  # refused whatever its alignment says: not aligned
            try:
                photo = verifier.gallery_features(str(row["image_ref"]))
            except Exception:  # read a moment ago; a photo gone since vouches for nothing
                continue
            found = _compare_listings(verifier, anchor_photo, photo, match)
            if found.same_item:
                passed.append((row, score, found))
        unscored = [str(row["product_id"]) for row, score, _ in passed if score is None]
        similar = (self._similarities([*searched, *turned], unscored, search_filter)
                   if unscored else {})
        out = []
        for row, score, found in passed:
            similarity = score if score is not None else similar.get(str(row["product_id"]),
                                                                     -1.0)
            if similarity < threshold:
                continue
            out.append((row, _via(found, anchor_id, similarity,
                                  "not verified against the query: below its candidates")))
        return out

    def _similarities(self, vectors: list[list[float]], product_ids: Sequence[str],
                      search_filter: SearchFilter | None) -> dict[str, float]:
        """Each of ``product_ids``' best cosine to any of ``vectors`` (under
        ``search_filter``)."""
        where = add_filter(self._base(), search_filter).in_("product_id", product_ids)
        limit = min(MAX_RESULT_WINDOW, MAX_PRODUCT_IMAGES * len(product_ids))  # all their rows
        results = self._checked(partial(
            self._store.search, self._spec.name, vectors, limit=limit, where=where,
            fields=["product_id"], params=search_params(self._spec, self.engine, limit,
                                                        filtered=True),
            consistency=self._consistency))
        best: dict[str, float] = {}
        for rows in results:
            for hit in rows:
                pid = str(hit["entity"]["product_id"])
                best[pid] = max(best.get(pid, -1.0), float(hit["distance"]))
        return best

    def _upright(self, picture: Image.Image, search_filter: SearchFilter | None
                 ) -> tuple[Image.Transpose | None, list[list[float]]]:
        """(the quarter turn that sets ``picture`` upright or None, the vectors of the photo
        and of its ``TURNS``, turned at ``WORKING_SIDE``). A photo saved sideways (a phone's
        orientation tag lost, a shop turning a tall product to fill a wide frame) is far from
        its listings by vector, which were embedded upright; turned back, it is near them.
        The turn whose nearest listing (under ``search_filter``) is nearest counts when it
        beats the photo as it is by ``TURN_MARGIN``: three more embeddings and one search of
        one row per vector."""
        working = _working(picture)
        vectors = self._embed_pictures([picture, *(working.transpose(t) for t in TURNS)])
        results = self._rows(vectors, 1, search_filter, (), ("product_id",))
        nearest = [float(rows[0]["distance"]) if rows else -1.0 for rows in results]
        best = max(range(len(TURNS)), key=lambda n: nearest[1 + n])
        if nearest[1 + best] >= nearest[0] + TURN_MARGIN:
            self.turned_photos += 1
            return TURNS[best], vectors
        return None, vectors

    def _hits(self, vectors: list[list[float]], k: int, search_filter: SearchFilter | None,
              match: Match, exclude: Sequence[str],
              photos: Sequence[PhotoFeatures] | None = None,
              cancelled: Cancelled | None = None) -> list[Hit]:
        """Search with each query vector weighted for ``match``; scores on its scale. With
        the query's ``photos`` and re-ranking on, the first ``rerank_depth`` are re-ranked
        by geometry (:meth:`rerank`; not when ``cancelled`` says the caller is gone)."""
        match = check_match(match)
        k = _check_k(k)
        search_filter = _check_filter(search_filter)
        reranks = photos is not None and self._rerank
        weighted = [[float(x) for x in self._weighting.vector(np.asarray(v, np.float64), match)]
                    for v in vectors]
        best = self._search(weighted, max(k, self._rerank_depth) if reranks else k, search_filter,
                            exclude=exclude)
        hits = [_hit(row, self._weighting.score(score, match)) for row, score in best]
        if not reranks or photos is None:
            return hits
        stop_if(cancelled, "re-ranking")
        return self.rerank(hits, photos, k)

    def query_vectors(self, images: Iterable[ImageInput], match: Match = "exact"
                      ) -> list[list[float]]:
        """The vectors an image search with ``images`` searches with, one embedder call per
        photo: each photo's, followed by its own under catalog light when it is a scene
        (:func:`search.scene.white_patch`), its cut-out's when it has one and its windows'
        when it has them, cut from the lit photo (:meth:`by_image`). One photo is loaded
        at a time, and its pictures are made from it shrunk to ``WORKING_SIDE`` and let go
        once embedded: what a request holds is one decode at a time and the pictures of one
        photo at that size, not every photo's at full size. ``match="similar"``: each photo
        in its channel orders, one mean vector each (:class:`search.intent.SimilarViews`),
        its scene pictures in one (:meth:`picture_embedders`)."""
        match = check_match(match)
        return [vector for image in _check_images(images)
                for vector in self._photo_vectors(self._load(image, self._max_pixels), match)]

    def _photo_vectors(self, picture: Image.Image, match: Match = "exact") -> list[list[float]]:
        """:meth:`query_vectors` of one loaded photo: the photo embedded as decoded (its
        vector as before, whatever its size), its scene pictures made from it at
        ``WORKING_SIDE``; each by its :meth:`picture_embedders`, one call per embedder (one
        call in all for ``exact``, as before)."""
        parts = scene_queries(_working(picture), light=self._light_queries,
                              cutouts_too=self._cutout_queries, windows_too=self._window_queries)
        pictures = [picture, *parts.pictures]
        embedders = self.picture_embedders(parts, match)
        if len(embedders) != len(pictures):
            raise ValueError(f"{len(embedders)} embedders for {len(pictures)} pictures")
        out: list[list[float]] = []
        # runs of one embedder (the photo's, its pictures'), each embedded in one call
        for _, run in groupby(zip(embedders, pictures, strict=True), key=lambda e: id(e[0])):
            batch = list(run)
            out += self._embed_pictures([picture for _, picture in batch], batch[0][0])
        return out

    def query_embedder(self, match: Match) -> Embedder:
        """What embeds a query photo itself for ``match``: the model, or for ``similar`` the
        model in ``similar_views`` channel orders (:func:`search.intent.similar_embedder`).
        Its scene pictures: :meth:`picture_embedders`. ``lookalike eval`` embeds its
        queries with them too."""
        return self._similar_embedder if match == "similar" else self._embedder

    def picture_embedders(self, parts: SceneQueries, match: Match) -> list[Embedder]:
        """What embeds each picture a query photo searches with (``[the photo,
        *parts.pictures]``) for ``match``: the photo itself by :meth:`query_embedder`, the
        pictures made from it (under catalog light, cut-outs, windows) by the model. For
        ``similar`` a scene photo's own pictures stay in one channel order: on scene photos
        whose other colours are the answer (luma-colours-snapshots) their orders gained
        nothing, where the photo's own colour is (luma-snapshots) they cost R@1 0.136 ->
        0.116, and they tripled the cost of a scene (docs/matching.md, "Channel orders on
        scene pictures"). So at most one picture per photo, ``MAX_QUERY_VECTORS`` a
        request, is embedded in orders: ``similar_views - 1`` passes more per photo than
        ``exact``."""
        return [self.query_embedder(match), *[self._embedder] * len(parts.pictures)]

    def _load_views(self, image: ImageInput) -> tuple[Image.Image, Image.Image]:
        """(the query photo to embed, the photo to verify) as decoded: the caller finds the
        keypoints of the second (at ``VERIFY_SIZE``, from the decode itself, as before),
        makes its scene pictures from the first shrunk to ``WORKING_SIDE``, and lets the
        decode go before the next photo is loaded. Decoded once where the two scales agree:
        a JPEG at the reduced scale of each (the model's and ``VERIFY_SIZE``, each covered),
        any other photo once for both (it used to be decoded a second time, at full size, to
        verify). A caller's ``image_loader`` is called once and its photo serves both."""
        if self._image_loader is not None:
            shown = self._image_loader(image, self._max_pixels)
            return shown, shown
        shown, to_verify = _load_scales(image, self._max_pixels,
                                        [self._decode_size, VERIFY_SIZE], self._max_bytes)
        return shown, to_verify

    def _embed_pictures(self, pictures: Sequence[Image.Image],
                        embedder: Embedder | None = None) -> list[list[float]]:
        """One call of ``embedder`` (by default the search's) for loaded ``pictures``, one
        checked vector each."""
        use = embedder if embedder is not None else self._embedder
        out = np.asarray(use.embed(list(pictures)), dtype=np.float32)
        if out.shape != (len(pictures), self._spec.dim):
            raise ValueError(f"embedder returned shape {out.shape}, expected "
                             f"({len(pictures)}, {self._spec.dim})")
        return [self._check_vector(row) for row in out]

    def _check_vector(self, vector: Sequence[float] | np.ndarray) -> list[float]:
        """``vector`` as the unit vector the engines are given (:func:`search.intent.unit`:
        normalised in float64, so its scale does not matter); ValueError for what is not real
        numbers (:func:`_real_numbers`), another dimension, a NaN or infinite entry, or the
        zero vector."""
        arr = _real_numbers(vector).astype(np.float64).reshape(-1)
        if arr.shape[0] != self._spec.dim:
            raise ValueError(f"vector has {arr.shape[0]} dimensions, expected {self._spec.dim}")
        return [float(x) for x in unit(arr).astype(np.float32)]

    def _has_rows_of_my_model(self) -> bool:
        return self._store.exists(self._spec.name, self._base(), "product_id",
                                  consistency=self._consistency)

    def _base(self) -> ExpressionBuilder:
        return self._store.expr().eq("model_version", self._embedder.model_version)

    def _product_images(self, product_id: str) -> list[tuple[list[float], str]]:
        """(vector, image_ref) of each stored image of ``product_id``, in pk order."""
        check_string(product_id, "product_id")
        rows = self._checked(partial(
            self._store.query, self._spec.name, self._base().eq("product_id", product_id),
            ["pk", "vector", "image_ref", "version"], limit=MAX_PRODUCT_IMAGES,
            consistency=self._consistency, op="product_vectors"))
        if not rows:
            self._confirm_model()
            raise ProductNotFound(product_id, self._embedder.model_version)
        rows = sorted(rows, key=lambda r: str(r["pk"]))
        self._observe_versions(rows)
        return [([float(x) for x in r["vector"]], str(r["image_ref"])) for r in rows]

    def _search(
        self,
        vectors: list[list[float]],
        k: int,
        search_filter: SearchFilter | None,
        exclude: Sequence[str],
    ) -> list[tuple[dict[str, Any], float]]:
        """Top ``k`` products (best row, best score) over all query vectors."""
        best: dict[str, tuple[dict[str, Any], float]] = {}
        limit = min(k * OVERFETCH, MAX_RESULT_WINDOW)
        while True:
            best.clear()
            full = self._page(vectors, limit, search_filter, exclude, exclude, best)
            if len(best) >= k or not full or limit >= MAX_RESULT_WINDOW:
                break
            limit = min(limit * 2, MAX_RESULT_WINDOW)
        if len(best) < k and not full:
            self._recover_short_page(vectors, k, search_filter, exclude, best)
        if not best:
            self._confirm_model()
        self._observe_versions(row for row, _ in best.values())
        ranked = sorted(best.values(), key=lambda rs: (-rs[1], str(rs[0]["product_id"])))
        return ranked[:k]

    def _observe_versions(self, rows: Iterable[dict[str, Any]]) -> None:
        """Tell the verifier the stored version of each row's photo, so that a photo it cached
        at another version is read again (:meth:`SameItemVerifier.observe`)."""
        if self._verifier is not None:
            self._verifier.observe((str(row["image_ref"]), int(row["version"]))
                                   for row in rows if row.get("version") is not None)

    def _where(self, search_filter: SearchFilter | None, exclude: Sequence[str]) -> Any:
        return add_filter(self._base(), search_filter).not_in("product_id", exclude)

    def _page(
        self, vectors: list[list[float]], limit: int, search_filter: SearchFilter | None,
        leave_out: Sequence[str], exclude: Sequence[str],
        best: dict[str, tuple[dict[str, Any], float]],
    ) -> bool:
        """One search for the rows of ``search_filter`` but ``leave_out``; keep each
        product's best row (but ``exclude``'s) in ``best``. True when a page was full."""
        results = self._rows(vectors, limit, search_filter, leave_out, _HIT_FIELDS)
        full = False
        for rows in results:
            full = full or len(rows) >= limit
            for hit in rows:
                _keep_best(best, dict(hit["entity"]), float(hit["distance"]), exclude)
        return full

    def _rows(self, vectors: list[list[float]], limit: int, search_filter: SearchFilter | None,
              leave_out: Sequence[str], fields: Sequence[str]) -> Any:
        """Milvus' ``limit`` nearest rows with ``fields`` for each of ``vectors``, under
        ``search_filter`` but ``leave_out`` (a checked read, :meth:`_checked`)."""
        narrows = search_filter is not None and search_filter.narrows
        return self._checked(partial(
            self._store.search, self._spec.name, vectors, limit=limit,
            where=self._where(search_filter, leave_out), fields=fields,
            params=search_params(self._spec, self.engine, limit, filtered=narrows),
            consistency=self._consistency))

    def _recover_short_page(
        self, vectors: list[list[float]], k: int, search_filter: SearchFilter | None,
        exclude: Sequence[str], best: dict[str, tuple[dict[str, Any], float]],
    ) -> None:
        """Fewer than ``k`` products from a page that was not full: look again without the
        products found, then score the remaining matches exactly (see the module docs)."""
        limit = min(k * OVERFETCH, MAX_RESULT_WINDOW)
        for _ in range(SHORT_PAGE_ROUNDS):
            found = len(best)
            self._page(vectors, limit, search_filter, [*exclude, *best], exclude, best)
            if len(best) >= k or len(best) == found:
                break
        if len(best) >= k:
            return
        rest = self._where(search_filter, [*exclude, *best])
        left = self._store.count(self._spec.name, where=rest, consistency=self._consistency)
        if left == 0:
            return
        if left > EXACT_MAX_ROWS:
            log.warning("short search page: %d matching rows not returned by the index; more "
                        "than %d, not scored exactly", left, EXACT_MAX_ROWS)
            return
        self.short_page_recoveries += 1
        rows = self._store.query(self._spec.name, self._where(search_filter, exclude),
                                 [*_HIT_FIELDS, "vector"], limit=EXACT_MAX_ROWS + len(best),
                                 consistency=self._consistency, op="exact_rest")
        if not rows:
            return
        matrix = np.asarray([r.pop("vector") for r in rows], dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        queries = np.asarray(vectors, dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        scores = (matrix @ queries.T).max(axis=1)
        for row, score in zip(rows, scores, strict=True):
            _keep_best(best, row, float(score), exclude)
        log.info("short search page recovered exactly rows=%d products=%d", len(rows), len(best))

    def _checked(self, call: Callable[[], Any]) -> Any:
        """Run a Milvus read; when it fails, a model switch (other dimension) is the likely
        cause, and the clearer error (:class:`ModelMismatchError`, chained to the failure).
        When the model check cannot run either (Milvus down, the store closed), the read's
        own error is raised and the check's is logged: it used to replace it. A mismatch
        found before is raised without the read (:meth:`_refuse_if_mismatched`)."""
        self._refuse_if_mismatched()
        try:
            return call()
        except Exception:
            try:
                self.check_model()
            except ModelMismatchError:
                raise
            except Exception as second:
                log.warning("the model check after a failed search failed too: %s: %s",
                            type(second).__name__, second)
            raise


def _keep_best(best: dict[str, tuple[dict[str, Any], float]], row: dict[str, Any], score: float,
               exclude: Sequence[str]) -> None:
    pid = str(row["product_id"])
    if pid not in exclude and (pid not in best or score > best[pid][1]):
        best[pid] = (row, score)


def _check_k(k: int) -> int:
    """``k`` as an int: any integer (``numpy.int64(5)`` too) but a bool, from 1 to MAX_K."""
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)


def _real_numbers(vector: object) -> np.ndarray:
    """``vector`` as an array of real numbers: a numpy array of an integer or float dtype, or
    a sequence of ints and floats (not bools, which numpy would read as 0 and 1); anything
    else (strings, bytes, bools, complex numbers, None, a dict, one number) is a ValueError
    naming what was given. numpy took strings of digits for numbers, dropped the imaginary
    part of complex ones, and said "1 dimensions" for None."""
    try:
        arr = np.asarray(vector)
    except (ValueError, TypeError):  # ragged, or refused by its own __array__
        arr = np.asarray(None)
    is_array = isinstance(vector, np.ndarray)
    if arr.ndim >= 1 and arr.dtype.kind in "iuf" and (is_array or not any(
            isinstance(x, bool | np.bool_) for x in np.asarray(vector, dtype=object).flat)):
        return arr
    if is_array:
        given = f"a numpy array of {arr.dtype}"
    elif isinstance(vector, list | tuple) and vector:
        kinds = sorted({type(x).__name__ for x in vector if isinstance(x, bool | np.bool_)
                        or not isinstance(x, int | float | np.integer | np.floating)})
        given = (f"a {type(vector).__name__} holding "
                 f"{', '.join(kinds) or 'integers too large for a float'}")
    else:
        given = type(vector).__name__
    raise ValueError(f"a vector must be real numbers (a list of floats or a numpy array of "
                     f"an integer or float dtype), not {given}")


def _listing(row: dict[str, Any]) -> dict[str, Any]:
    """The stored listing's fields that a :class:`Hit` and a :class:`PriceMatch` both show."""
    return {
        "product_id": str(row["product_id"]),
        "title": str(row["title"]),
        "category": str(row["category"]),
        "price": float(row["price"]),
        "currency": str(row["currency"]),
        "image_ref": str(row["image_ref"]),
        "image_key": str(row["image_key"]),
    }


def _hit(row: dict[str, Any], score: float) -> Hit:
    return Hit(score=score, **_listing(row))


def _look_deeper(verifier: SameItemVerifier, queries: Sequence[PhotoFeatures],
                 rest: Sequence[tuple[dict[str, Any], float]], k: int,
                 readers: Executor | None = None, unreadable: AbstractSet[str] = frozenset()
                 ) -> list[tuple[dict[str, Any], Evidence]]:
    """The candidates below the first ``k``, when those are a family of look-alikes (most of
    them match the query's geometry: one pack layout's other flavours and lines): ranked by
    their geometric inliers, which put the item itself above the family where the vector
    does not, and the ``k`` with the most (at least the rule's ``min_inliers``) verified in
    full, with the print check (another line on the same layout is the likely look-alike
    here). Of more than ``DEEP_MATCHED * k`` candidates (the search went down to
    ``family_depth`` products), only those with the most keypoint votes are matched
    geometrically. On same-item-packs the relevant listings among the candidates rose from
    41 % to 62 % (60 candidates), then to 93 % (200, by votes) and 97 % (400); elsewhere it
    runs for a few queries (docs/matching.md, "Deeper round" and "Deeper, by votes"). The
    listing photos not cached yet are read ``readers`` at a time (fetched, decoded, keypoints
    found: what a cold cache costs); one that cannot be read (or is known ``unreadable``)
    gets no votes and is not read again for them."""
    if len(rest) > DEEP_MATCHED * k:  # a cheap first cut: the most keypoint votes
        rest = _most_voted(verifier, queries, rest, DEEP_MATCHED * k, readers,
                           unreadable=unreadable)
    return _match_and_verify(verifier, queries, rest, k, print_check=True, overlay="covers",
                             unreadable=unreadable)


def _second_page(verifier: SameItemVerifier, queries: Sequence[PhotoFeatures],
                 rest: Sequence[tuple[dict[str, Any], float]],
                 readers: Executor | None = None, unreadable: AbstractSet[str] = frozenset()
                 ) -> list[tuple[dict[str, Any], Evidence]]:
    """The candidates below the first ``k`` when those are not a family: the
    ``SECOND_PAGE_MATCHED`` with the most keypoint votes are matched geometrically, and
    those with the rule's ``min_inliers`` verified as the first ``k`` are. An edit that moves
    a photo's vector far from its listings (shrunk into a phone screenshot, a tight zoom, a
    thumbnail blown up) keeps its keypoints: such listings ranked 20-60 by vector on
    same-item-fresh (docs/matching.md, "Second page"). Run whether or not the first ``k``
    matched: it once ran only when they had not, since after a match it listed more copies
    of a look-alike colour variant (same-item-heldout's precision 0.983 -> 0.979); with the
    rule refusing a recoloured part, running it always costs 0.986 -> 0.983 there and raises
    recall on seven protocols ("The second page always"). Listing photos not cached yet are
    read ``readers`` at a time (not those known ``unreadable``)."""
    kept = _most_voted(verifier, queries, rest, SECOND_PAGE_MATCHED, readers, voted_only=True,
                       unreadable=unreadable)
    return _match_and_verify(verifier, queries, kept, len(kept), unreadable=unreadable)


def _most_voted(verifier: SameItemVerifier, queries: Sequence[PhotoFeatures],
                rest: Sequence[tuple[dict[str, Any], _Score]], most: int,
                readers: Executor | None, voted_only: bool = False,
                unreadable: AbstractSet[str] = frozenset()
                ) -> list[tuple[dict[str, Any], _Score]]:
    """The ``most`` candidates of ``rest`` with the most keypoint votes from any query photo
    (ties: the earlier first, the more similar on a ranked page), in their order
    (``voted_only``: none without a vote).
    The listing photos not cached yet are read ``readers`` at a time first, but those known
    ``unreadable`` (no votes: read once is enough)."""
    refs = [str(row["image_ref"]) for row, _ in rest]
    if readers is not None:
        unread = [ref for ref in refs if ref not in unreadable]
        unreadable = {*unreadable, *_read_ahead(verifier, unread, readers)}
    votes = verifier.keypoint_votes(queries, refs, unreadable)
    ranked = sorted(range(len(rest)), key=lambda n: (-max(v[n] for v in votes), n))
    kept = sorted(n for n in ranked[:most] if not voted_only or max(v[n] for v in votes) > 0)
    return [rest[n] for n in kept]


def _match_and_verify(verifier: SameItemVerifier, queries: Sequence[PhotoFeatures],
                      rest: Sequence[tuple[dict[str, Any], float]], most: int,
                      print_check: bool = False, overlay: Overlay = "open",
                      unreadable: AbstractSet[str] = frozenset()
                      ) -> list[tuple[dict[str, Any], Evidence]]:
    """``rest`` matched geometrically with each query photo (but the known ``unreadable``);
    of the ``most`` with the most inliers, those with the rule's ``min_inliers`` verified in
    full (``print_check``, ``overlay``: see :meth:`SameItemVerifier.verify`), in their order,
    with their evidence."""
    refs = [str(row["image_ref"]) for row, _ in rest]
    matched = [_keypoint_matches(verifier, q, refs, unreadable) for q in queries]
    best = sorted(range(len(rest)), key=lambda n: (-_most_inliers(matched, n), n))[:most]
    chosen = sorted(n for n in best if _most_inliers(matched, n) >= verifier.rule.min_inliers)
    if not chosen:
        return []
    pairs = [(refs[n], rest[n][1]) for n in chosen]
    per_query = [verifier.verify(q, pairs, [m[n] for n in chosen], print_check=print_check,
                                 overlay=overlay)
                 for q, m in zip(queries, matched, strict=True)]
    return [(rest[n][0], _strongest(found[i] for found in per_query))
            for i, n in enumerate(chosen)]


def _start_reading(verifier: SameItemVerifier, refs: Iterable[str], readers: Executor
                   ) -> dict[str, Future[PhotoFeatures]]:
    """Each distinct listing photo of ``refs`` read into ``verifier``'s cache on ``readers``
    (fetched, decoded, keypoints found where not cached yet), by ref."""
    return {ref: readers.submit(verifier.gallery_features, ref) for ref in dict.fromkeys(refs)}


def _read_ahead(verifier: SameItemVerifier, refs: Sequence[str], readers: Executor
                ) -> set[str]:
    """Read the listing photos ``refs`` into ``verifier``'s cache on ``readers``; the refs that
    could not be read."""
    return set(_read_errors(verifier, refs, readers))


def _read_errors(verifier: SameItemVerifier, refs: Sequence[str], readers: Executor | None
                 ) -> dict[str, BaseException]:
    """Read the listing photos ``refs`` into ``verifier``'s cache (on ``readers``; None: one
    after the other, here); why each that could not be read could not, by ref."""
    if readers is None:
        failed: dict[str, BaseException] = {}
        for ref in dict.fromkeys(refs):
            try:
                verifier.gallery_features(ref)
            except Exception as exc:
                failed[ref] = exc
        return failed
    reading = _start_reading(verifier, refs, readers)
    return {ref: error for ref, future in reading.items()
            if (error := future.exception()) is not None}


def _read_candidates(verifier: SameItemVerifier,
                     candidates: Sequence[tuple[dict[str, Any], float]],
                     readers: Executor | None) -> set[str]:
    """Read the listing photos of price comparison's ``candidates`` ahead (``readers`` at a
    time); the refs that could not be read, each refused with its reason and not read again
    for votes or matches. When none can be read nothing can be verified: raises
    :class:`StoredPhotoUnreadable` with the first one's reason, as the query product's own
    unreadable photo does (an empty answer read as "no other listing", e.g. with
    ``LOOKALIKE_IMAGES__ROOTS='[]'``). When some cannot, a warning counts them."""
    refs = list(dict.fromkeys(str(row["image_ref"]) for row, _ in candidates))
    failed = _read_errors(verifier, refs, readers)
    if not failed:
        return set()
    ref, error = next(iter(failed.items()))
    if len(failed) == len(refs):
        raise _stored_unreadable(
            error, f"none of the {len(refs)} candidate listing photo(s) could be read for "
            f"verification; the first, {ref!r}",
            f"none of the {len(refs)} candidate listings' photos could be read", ref) from error
    log.warning("price comparison: %d of %d candidate listing photos could not be read and "
                "are refused; the first, %r: %s", len(failed), len(refs), ref,
                _why(error))
    return set(failed)


def _keypoint_matches(verifier: SameItemVerifier, query: PhotoFeatures, refs: Sequence[str],
                      unreadable: AbstractSet[str]) -> list[KeypointMatch | None]:
    """:meth:`SameItemVerifier.keypoint_matches` of ``refs``, None for the known
    ``unreadable`` ones (not tried again)."""
    readable = [ref for ref in refs if ref not in unreadable]
    found = dict(zip(readable, verifier.keypoint_matches(query, readable), strict=True))
    return [found.get(ref) for ref in refs]


def _why(error: BaseException) -> str:
    return error.detail if isinstance(error, ItemError) else f"{type(error).__name__}: {error}"


def _stored_unreadable(error: BaseException, what: str, unread: str,
                       ref: str = "") -> StoredPhotoUnreadable:
    """``error`` (reading a stored listing photo) as :class:`StoredPhotoUnreadable`, with
    its reason (``unreadable`` for an error without one)."""
    reason = error.reason if isinstance(error, ItemError) else Reason.UNREADABLE
    return StoredPhotoUnreadable(reason, f"{what}: {_why(error)}", unread=unread, ref=ref)


def _most_similar_first(found: Sequence[tuple[dict[str, Any], float]], threshold: float
                        ) -> list[tuple[dict[str, Any], float]]:
    """The (row, score) pairs of ``found`` scoring ``threshold`` or more, best first (stable)."""
    return sorted((rs for rs in found if rs[1] >= threshold), key=lambda rs: -rs[1])


def _most_inliers(matched: Sequence[Sequence[KeypointMatch | None]], n: int) -> int:
    """Candidate ``n``'s most geometric inliers with any of the query photos (``matched``:
    each query photo's :meth:`SameItemVerifier.keypoint_matches`)."""
    return max((found[0] for m in matched if (found := m[n]) is not None), default=0)


def _corroborate(verifier: SameItemVerifier, verified: list[tuple[dict[str, Any], Evidence]]
                 ) -> list[tuple[dict[str, Any], Evidence]]:
    """Candidates refused against the query photo but shown to be the same item by the listing
    that matched it best (the anchor): another shop's photo of the item, re-shot or edited
    otherwise than the query, whose differences from the query compound two captures or two
    edits, one of each pair at a time. Two listing photos are compared by the same rule, with
    the print check asked and without the overlay route (it trusts only the surface near the
    inliers: between two listings, another flavour of one pack layout passes it) nor the
    near-identical and keypoint-free routes (the geometry must show it). A refusal whose
    evidence names another variant (another shade's brightness, another line's print:
    ``SameItemRule.names_another_variant``) is not overruled; one a capture or an edit
    explains (too few inliers, colours shifted, aligned photos that differ) may be. At most
    ``CORROBORATE_MAX`` refused candidates, those sharing the most keypoints with the query
    first. Not transitive: only the anchor vouches (docs/matching.md)."""
    refused = [n for n, (_, e) in enumerate(verified) if not e.same_item]
    anchor = _anchor(verified)
    if anchor is None or not refused:
        return verified
    anchor_id = str(verified[anchor][0]["product_id"])
    try:
        anchor_photo = verifier.gallery_features(str(verified[anchor][0]["image_ref"]))
    except Exception:  # it was loaded a moment ago; a photo gone since vouches for nothing
        return verified
    out = list(verified)
    open_to_it = [n for n in refused
                  if not verifier.rule.names_another_variant(verified[n][1].alignment)]
    for n in sorted(open_to_it, key=lambda n: (-verified[n][1].inliers, n))[:CORROBORATE_MAX]:
        row, refusal = verified[n]
        try:
            photo = verifier.gallery_features(str(row["image_ref"]))
        except Exception:  # refused already, with its reason
            continue
        found = _compare_listings(verifier, anchor_photo, photo)
        if found.same_item:
            out[n] = (row, _via(found, anchor_id, refusal.similarity,
                                f"against the query: {refusal.reason}"))
    return out


def _compare_listings(verifier: SameItemVerifier, anchor: PhotoFeatures, photo: PhotoFeatures,
                      matched: KeypointMatch | None = None) -> Evidence:
    """Another listing's ``photo`` compared with the ``anchor``'s (the listing that matched
    the query best) as two listing photos are: the same rule, with the print check asked and
    the overlay, near-identical and keypoint-free routes closed (:func:`_corroborate` says
    why); ``matched``: their geometric match, when already computed. When one of the two was
    re-shot on a backdrop (it has a segmented product mask) and the other was not, and only
    their colours differ, the re-shot one is compared as the query under the shaded light
    route alone (``overlay="relit"``): a shop's own photo, lit unevenly, of the item the
    anchor shows on white (docs/matching.md, "Shaded light route, kept")."""
    found = verifier.compare(anchor, photo, 0.0, allow_coarse=False, matched=matched,
                             print_check=True, overlay="closed")
    rule = verifier.rule
    if found.same_item or not rule.only_colours_differ(found.inliers, found.alignment):
        return found
    if anchor.product is not None and photo.product is None:  # the anchor re-shot: as it is
        same, why = rule.decide(0.0, found.inliers, found.colour_agreement, found.alignment,
                                "relit")
        return replace(found, same_item=True, reason=why) if same else found
    if photo.product is not None and anchor.product is None:
        turned = verifier.compare(photo, anchor, 0.0, allow_coarse=False, print_check=True,
                                  overlay="relit")
        return turned if turned.same_item else found
    return found


def _via(found: Evidence, anchor_id: str, similarity: float, why: str) -> Evidence:
    """``found`` (a listing the same item as the anchor, :func:`_compare_listings`) as the
    query's match through the anchor: its ``similarity`` to the query and a reason that says
    both comparisons (``why``: what it was against the query)."""
    return replace(found, similarity=similarity, via=anchor_id,
                   reason=(f"the same item as listing {anchor_id}, which matched the query: "
                           f"{found.reason} ({why})"))


def _anchor(verified: Sequence[tuple[dict[str, Any], Evidence]]) -> int | None:
    """The listing that matched the query best: of those accepted against the query itself
    (not vouched for by another), the one with the most inliers (the earlier on a tie)."""
    accepted = [n for n, (_, e) in enumerate(verified) if e.same_item and e.via is None]
    return max(accepted, key=lambda n: (verified[n][1].inliers, -n)) if accepted else None


def _strongest(evidence: Iterable[Evidence]) -> Evidence:
    """Of one candidate's evidence against each query photo: an accepting one with the most
    inliers, else the refusal with the most."""
    return max(evidence, key=lambda e: (e.same_item, e.inliers, e.similarity))


def _price_match(row: dict[str, Any], evidence: Evidence) -> PriceMatch:
    return PriceMatch(
        similarity=evidence.similarity,
        inliers=evidence.inliers,
        colour_agreement=round(evidence.colour_agreement, 4),
        correlation=round(a.correlation, 4) if (a := evidence.alignment) else None,
        colour_shift=None if (shift := evidence.colour_shift) is None else round(shift, 2),
        reason=evidence.reason,
        via=evidence.via,
        seller_id=str(row["seller_id"]),
        **_listing(row),
    )
