"""The HTTP API: ``ProductSearch`` over FastAPI, plus the search page and the probes.

:func:`create_app` takes objects that are already built (search, readiness probe, metrics,
the worker pool the model runs in), so the app is cheap to make and tests hand in fakes. The
model and Milvus calls run on ``pool``: an upload being embedded never blocks the event loop,
and the pool's size bounds how many queries the model works on at once.

Every failure a caller can cause is a 4xx with ``{"error": {"code", "message"}}``; Milvus
trouble is a 503. Image references are never fetched on a caller's behalf: queries are uploaded
bytes, vectors or stored product ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote_plus, unquote_to_bytes

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)
from starlette import routing
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from embedding.decode import ImageDecodeError, declared_pixels
from lookalike.settings import MAX_K, SearchSettings, ServeSettings
from schema.errors import ItemError, Reason
from schema.events import check_nesting
from search.api import (
    MAX_QUERY_VECTORS,
    ModelMismatchError,
    ProductNotFound,
    ProductSearch,
    StoredPhotoUnreadable,
)
from search.cancel import Cancelled, SearchCancelled, stop_if
from search.filters import Number, Price, SearchFilter
from serve.disconnect import ClientWatch
from serve.errors import error_response
from serve.health import Readiness
from serve.images import CatalogImage, ImageRefused, ImageRoots
from serve.metrics import SearchMetrics, TimedEmbedder
from serve.middleware import (
    BodyRefused,
    ObserveRequests,
    SecurityHeaders,
    is_multipart,
    refusal,
)
from store import MilvusStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
T = TypeVar("T")
Match = Literal["similar", "exact"]


_SEARCH = SearchSettings()
_SERVE = ServeSettings()

MAX_JSON_BYTES = 1024 * 1024
"""The cap on a body that is not a multipart upload. A JSON query carries no image (uploads
are multipart): its largest valid form is a vector of :data:`MAX_VECTOR_LENGTH` numbers
(~25 bytes each as ``json.dumps`` writes a float64: ~200 KB) with 64 categories; the upload
cap (``serve.max_upload_bytes``, 20 MiB) let a JSON body hold that much memory."""

MAX_VECTOR_LENGTH = 8192
PARSE_INLINE_BYTES = 64 * 1024
"""JSON bodies up to this size are parsed on the event loop (tens of microseconds); larger
ones on a thread, so a few large bodies do not hold up every other request (four 19 MiB
bodies held ``/livez`` up to 2 s). Not on the search pool: it bounds the queries."""


@dataclass(frozen=True)
class ServeConfig:
    """What the API needs of the settings (lookalike/app.py passes them; the defaults are the
    settings' own)."""

    image_roots: Sequence[Path] = field(default_factory=list)
    default_k: int = _SEARCH.k
    compare_k: int = _SEARCH.compare_k
    compare_threshold: float = _SEARCH.compare_threshold
    max_upload_bytes: int = _SERVE.max_upload_bytes
    max_request_pixels: int = _SERVE.max_request_pixels
    max_json_bytes: int = MAX_JSON_BYTES
    body_timeout_s: float = _SERVE.body_timeout_s
    body_idle_s: float = _SERVE.body_idle_s


class ApiError(Exception):
    """A request the API refuses: ``status`` and a short ``code`` with a readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_CALLER_ERRORS = (ApiError, ImageDecodeError, ProductNotFound, ValueError, ModelMismatchError)
"""What ``ProductSearch`` raises about a request (mapped to 4xx/503 by the handlers below)."""


class FilterOptions(BaseModel):
    """What every search and comparison takes besides its query (JSON or form fields).
    Numbers must be JSON numbers: ``true`` or ``"5"`` is refused, as in ``vector``, not read
    as 1 or 5 (form fields and query strings are text: :class:`_FromText`)."""

    model_config = ConfigDict(extra="forbid")

    k: StrictInt | None = Field(
        default=None, ge=1, le=MAX_K,
        description="hits to return; for compare-prices, the most similar products verified "
                    "first (every listing verified is returned)")
    categories: list[str] = Field(default_factory=list, max_length=64,
                                  description="category paths; sub-paths match too")
    min_price: Price | None = None
    max_price: Price | None = None
    currency: str | None = Field(default=None, description="ISO-4217 code")

    def search_filter(self) -> SearchFilter | None:
        """The filter asked for, None when it narrows nothing. Every field given is checked,
        an empty one too: ``"currency": ""`` was taken for no currency (unfiltered hits)."""
        try:
            found = SearchFilter(categories=self.categories, min_price=self.min_price,
                                 max_price=self.max_price, currency=self.currency)
        except ValidationError as exc:
            raise ApiError(422, "invalid_filter", _first_error(exc)) from None
        return found if found.narrows else None


_WHOLE = re.compile(r"[+-]?[0-9]{1,100}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,400}(?:\.[0-9]{0,400})?|\.[0-9]{1,400})"
                      r"(?:[eE][+-]?[0-9]{1,4})?")
_TEXT_NUMBERS: dict[str, tuple[re.Pattern[str], Callable[[str], float]]] = {
    "k": (_WHOLE, int), "min_price": (_DECIMAL, float), "max_price": (_DECIMAL, float),
    "threshold": (_DECIMAL, float)}


class _FromText(BaseModel):
    """Options that arrive as text (form fields, a query string): a number field's text is a
    number only when written as one (``5``, ``12.5``, ``1e3``), so ``true`` or ``5 apples``
    is refused as JSON's ``true`` and ``"5"`` are; ``nan`` and ``inf`` too."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _numbers_from_text(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, (pattern, parse) in _TEXT_NUMBERS.items():
            text = out.get(name)
            if isinstance(text, str) and pattern.fullmatch(text):
                out[name] = parse(text)
        return out


Threshold = Annotated[Number, Field(ge=-1, le=1, allow_inf_nan=False,
                                   description="cosine below which a candidate is not verified")]


class SearchOptions(FilterOptions):
    """A search's options: the filters and the intent."""

    match: Match | None = Field(default=None, description="similar: look-alikes; exact: this "
                                "item in this colour; default: the search module's own")


class SearchForm(SearchOptions, _FromText):
    """An upload's search options: its form fields besides the files."""


class SimilarQuery(SearchOptions, _FromText):
    """``/v1/products/{id}/similar``'s query string: the search options, ``category``
    repeated for ``categories``; an unknown parameter is refused, as in a JSON body."""

    categories: list[str] = Field(default_factory=list, max_length=64, alias="category",
                                  description="category paths; sub-paths match too")


class SearchBody(SearchOptions):
    """JSON query: exactly one of ``vector`` (from the serving model) or ``product_id``."""

    vector: list[StrictFloat] | None = Field(
        default=None, max_length=MAX_VECTOR_LENGTH,
        description="numbers as JSON numbers: \"0.1\" or true is refused, not read as one")
    product_id: str | None = Field(default=None, max_length=512)


class CompareBody(FilterOptions):
    """Price comparison (always of the same item) of a stored product."""

    product_id: str | None = Field(default=None, max_length=512)
    threshold: Threshold | None = None


class CompareForm(FilterOptions, _FromText):
    """Price comparison of an uploaded image: its form fields besides the file."""

    threshold: Threshold | None = None


def _first_error(exc: ValidationError | RequestValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _request_body(model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for an endpoint that takes JSON (``model``) or a multipart upload: ``image``
    files plus ``form_model``'s fields (``category`` repeated for ``categories``)."""
    fields = dict(form_model.model_json_schema()["properties"])
    fields["category"] = fields.pop("categories")
    form = {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}}, **fields}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()},
        "multipart/form-data": {"schema": form}}}}


def create_app(
    search: ProductSearch,
    *,
    embedder: TimedEmbedder,
    store: MilvusStore,
    readiness: Readiness,
    registry: CollectorRegistry,
    metrics: SearchMetrics,
    pool: Executor,
    config: ServeConfig,
) -> FastAPI:
    """The API over ``search`` (a ``ProductSearch`` reading ``store`` and embedding with
    ``embedder``, whose calls are timed per request); nothing is built or loaded here."""
    # redirect_slashes: "/livez/" was a 307 to a Location built from the Host header
    # (http://evil.example/livez behind a cache); now a 404 like any unknown path
    app = FastAPI(title="Lookalike", version="1", summary="Visual product search",
                  docs_url="/docs", redoc_url=None, redirect_slashes=False)
    roots = ImageRoots(config.image_roots)

    def recorded(fn: Callable[[], T], rest: str | None, gone: Cancelled) -> T:
        """``fn`` with this worker thread's model and Milvus calls timed, as one request;
        ``rest``: the stage its other time goes to, when it answers (a request refused
        before that work, an unknown product's comparison, is not that stage's). Not
        started when its client left while it waited for a worker (``gone``)."""
        stop_if(gone, "the search: the request waited for a worker")
        with embedder.recording() as model_calls, store.recording() as store_calls:
            started = time.perf_counter()
            answered = False
            try:
                result = fn()
                answered = True
                return result
            finally:
                metrics.observe_request(time.perf_counter() - started, model_calls,
                                        store_calls, rest=rest if answered else None)

    async def on_pool(call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def run(request: Request, call: Callable[..., T], *, rest: str | None = None,
                  cancellable: bool = False) -> T:
        """A search on the worker pool, timed (``rest``: :meth:`SearchMetrics.observe_request`);
        a failure the caller did not cause is a 503. While it waits and runs, the client is
        watched (serve/disconnect.py): one that went away is not searched for, and a
        ``cancellable`` call (one taking ``cancelled``) stops at its next stage; either way,
        and for an answer ready once it has gone, ``ClientDisconnect``: counted 499, no
        answer sent (serve/middleware.py)."""
        try:
            async with ClientWatch(request.receive) as watch:
                work = partial(call, cancelled=watch.gone) if cancellable else call
                result = await on_pool(partial(recorded, work, rest, watch.gone))
                if watch.gone():
                    raise SearchCancelled("the caller went away: the answer is ready, unread")
                return result
        except SearchCancelled as exc:
            log.debug("%s %s: %s", request.method, request.url.path, exc)
            raise ClientDisconnect() from None
        except _CALLER_ERRORS:
            raise
        except Exception as exc:
            log.exception("search failed")
            raise ApiError(503, "search_unavailable", f"the search backend failed "
                           f"({type(exc).__name__}); retry later") from None

    def matching(options: SearchOptions) -> dict[str, Any]:
        return {} if options.match is None else {"match": options.match}

    decode_sizes = search.query_decode_sizes  # how a JPEG view counts in pixels

    async def uploads(request: Request) -> tuple[list[bytes], dict[str, Any]]:
        form = await _read_form(request, config.max_upload_bytes)
        files = [v for v in form.getlist("image") if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(422, "missing_image", "upload at least one file in the 'image' field")
        images = [await f.read() for f in files]
        await _off_the_loop_if_large(sum(len(data) for data in images), _within_pixels,
                                     images, config.max_request_pixels, decode_sizes)
        return images, _form_fields(form)

    @app.post("/v1/search", tags=["search"], openapi_extra=_request_body(SearchBody, SearchForm),
              summary="Products that look like uploaded photos, a vector, or a stored product")
    async def search_endpoint(request: Request) -> dict[str, Any]:
        if _is_multipart(request):
            images, fields = await uploads(request)
            options = _validated(SearchForm, fields)
            k = options.k or config.default_k
            hits = await run(request, partial(search.by_images, images, k=k,
                                              filter=options.search_filter(),
                                              **matching(options)),
                             rest="photos", cancellable=True)
        else:
            body = await _read_json(request, SearchBody)
            k = body.k or config.default_k
            if (body.vector is None) == (body.product_id is None):
                raise ApiError(422, "invalid_request",
                               "give exactly one of 'vector' or 'product_id' (or upload an image)")
            if body.vector is not None:
                hits = await run(request, partial(search.by_vector, body.vector, k=k,
                                                  filter=body.search_filter(),
                                                  **matching(body)))
            else:
                assert body.product_id is not None  # exactly one of the two, checked above
                hits = await run(request, partial(search.by_product, body.product_id, k=k,
                                                  filter=body.search_filter(),
                                                  **matching(body)))
        return {"hits": [h.model_dump(mode="json") for h in hits]}

    # ``path``: a product id may hold "/" (the event schema allows it), sent as is or as %2F
    @app.get("/v1/products/{product_id:path}/similar", tags=["search"],
             summary="More like this: products similar to a stored product (never itself)")
    @app.head("/v1/products/{product_id:path}/similar", include_in_schema=False)
    async def similar(request: Request, product_id: str,
                      options: Annotated[SimilarQuery, Query()]) -> dict[str, Any]:
        _query_once(request, frozenset({"category"}))
        hits = await run(request, partial(search.by_product, product_id,
                                          k=options.k or config.default_k,
                                          filter=options.search_filter(), **matching(options)))
        return {"hits": [h.model_dump(mode="json") for h in hits]}

    @app.post("/v1/compare-prices", tags=["search"],
              openapi_extra=_request_body(CompareBody, CompareForm),
              summary="Listings of the same item, cheapest first, with their evidence")
    async def compare_prices(request: Request) -> dict[str, Any]:
        if _is_multipart(request):
            images, fields = await uploads(request)
            if len(images) != 1:
                raise ApiError(422, "invalid_request", "compare one image at a time")
            body: CompareForm | CompareBody = _validated(CompareForm, fields)
            query: dict[str, Any] = {"image": images[0]}
        else:
            body = by_id = await _read_json(request, CompareBody)
            if by_id.product_id is None:
                raise ApiError(422, "invalid_request",
                               "give 'product_id' (or upload an image as multipart/form-data)")
            query = {"product_id": by_id.product_id}
        threshold = body.threshold if body.threshold is not None else config.compare_threshold
        try:
            matches = await run(request, partial(search.compare_prices, **query,
                                                 threshold=threshold,
                                                 k=body.k or config.compare_k,
                                                 filter=body.search_filter()),
                                rest="verify", cancellable=True)
        except ImageDecodeError as exc:
            if "image" in query and not isinstance(exc, StoredPhotoUnreadable):
                raise  # the upload: the caller's problem (422)
            raise ApiError(503, "stored_image_unreadable",
                           f"stored listing photos could not be loaded for verification "
                           f"({exc.reason}); check the image roots") from None
        return {"threshold": threshold, "matches": [m.model_dump(mode="json") for m in matches]}

    @app.get("/v1/images", tags=["page"], summary="A catalog image from the image roots")
    @app.head("/v1/images", include_in_schema=False)
    async def image(request: Request,
                    ref: Annotated[str, Query(max_length=4096)]) -> CatalogImage:
        _query_once(request)
        found = roots.resolve(ref)
        if isinstance(found, ImageRefused):
            raise ApiError(404 if found.reason == "not_found" else 400, found.reason, found.detail)
        try:
            return CatalogImage(found, headers={"Cache-Control": "max-age=3600",
                                                "X-Content-Type-Options": "nosniff"})
        except OSError:  # removed since it was resolved
            raise ApiError(404, "not_found", "no such image") from None

    @app.get("/livez", tags=["probes"])
    @app.head("/livez", include_in_schema=False)
    async def livez() -> JSONResponse:
        lost = readiness.lost()
        if lost is not None:
            return JSONResponse({"status": "lost", "reason": lost}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["probes"])
    @app.head("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await readiness.probe()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"], include_in_schema=False)
    @app.head("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    @app.head("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _error_handlers(app)
    app.add_middleware(ObserveRequests, metrics=metrics, max_body_bytes=config.max_upload_bytes,
                       max_json_bytes=config.max_json_bytes, body_timeout_s=config.body_timeout_s,
                       body_idle_s=config.body_idle_s, routes=app.routes)
    app.add_middleware(SecurityHeaders)  # outermost: also on the refusals of the one above
    return app


def _is_multipart(request: Request) -> bool:
    """As the body's cap decided (serve/middleware.py, which refuses a second Content-Type)."""
    return is_multipart(request.headers.get("content-type"))


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", _first_error(exc)) from None


async def _read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``: parsed and validated on a thread when it is large."""
    raw = await request.body()
    return await _off_the_loop_if_large(len(raw), _parse_json, raw, model)


async def _off_the_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on the event loop for a body of ``size`` bytes up to
    ``PARSE_INLINE_BYTES`` (microseconds), else on a thread, so that a few large bodies do
    not hold up every other request."""
    if size > PARSE_INLINE_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


_JSON_START = re.compile(r'[ \t\n\r]*[{\["0-9tfnNI-]')
"""What a JSON text starts with: whitespace, then a value (Python's reader also takes NaN and
Infinity, which the models refuse)."""


class _TooManyDigits(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _json_int(text: str) -> int:
    """A JSON integer; one longer than Python reads (``sys.get_int_max_str_digits()``, 4,300
    digits) was "the body is not JSON"."""
    try:
        return int(text)
    except ValueError:
        raise _TooManyDigits(len(text.lstrip("-"))) from None


def _parse_json(raw: bytes, model: type[M]) -> M:
    """``raw`` read as ``json.loads`` reads bytes (UTF-8, a BOM or UTF-16/32 detected), first
    checked to start as JSON does: a JPEG or ``x[[[[...`` was refused as "nesting deeper than
    16 levels", counted before anything said it was no JSON."""
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "the body is not JSON: it is not UTF-8 text (or "
                       "upload an image as multipart/form-data)") from None
    if not _JSON_START.match(text):
        raise ApiError(400, "bad_json", "the body is not JSON: it does not start as a JSON "
                       "value does (or upload an image as multipart/form-data)")
    try:
        check_nesting(raw)  # json.loads recurses per level: 200,000 '[' are a RecursionError
        body = json.loads(text, object_pairs_hook=_object, parse_int=_json_int)
    except ItemError as exc:
        raise ApiError(400, "bad_json", f"the JSON body is refused: {exc.detail}") from None
    except _TooManyDigits as exc:
        raise ApiError(422, "invalid_request", f"the JSON body holds a number of {exc.digits} "
                       "digits: too many digits for any field") from None
    except ValueError:
        raise ApiError(400, "bad_json", "the body is not JSON (or upload an image as "
                       "multipart/form-data)") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "the JSON body must be an object")
    return _validated(model, body)


def _form_fields(form: FormData) -> dict[str, Any]:
    """A form's fields besides its images, for a :class:`FilterOptions` model to validate:
    ``category`` repeated is ``categories``; any other name, a file under it too, goes to the
    model as it came, which refuses an unknown one rather than ignore it. A file sent as a
    ``category`` is refused (it was dropped: the hits came unfiltered), and so is any other
    field given twice (the last one won)."""
    pairs = [(k, v) for k, v in form.multi_items() if k not in ("image", "category")]
    _refuse_repeated(pairs, "field")
    fields: dict[str, Any] = dict(pairs)
    if "categories" in fields:
        raise ApiError(422, "invalid_request",
                       "categories: a form sends each category as a 'category' field")
    categories = form.getlist("category")
    if not all(isinstance(c, str) for c in categories):
        raise ApiError(422, "invalid_request", "category: a text field, not a file")
    fields["categories"] = categories
    return fields


def _refuse_repeated(pairs: Sequence[tuple[str, Any]], what: str) -> None:
    """422 for a name given twice (only ``category`` may repeat, and is not passed here):
    the last one silently won, so ``k=1&k=3`` was a search for 3."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ApiError(422, "invalid_request", f"{name}: the {what} is given twice")
        seen.add(name)


def _query_once(request: Request, repeatable: frozenset[str] = frozenset()) -> None:
    """The query string's parameters each once (but ``repeatable``), and each UTF-8 text:
    Starlette reads ``%FF%FE`` as U+FFFD, so the raw bytes are checked (``%EF%BF%BD``, a
    U+FFFD sent as such, is text)."""
    for pair in request.scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        for part in (name, value):
            try:
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                raise _not_text(unquote_plus(name.decode("latin-1"))) from None
    _refuse_repeated([(k, v) for k, v in request.query_params.multi_items()
                      if k not in repeatable], "query parameter")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (``json`` keeps the last)."""
    _refuse_repeated(pairs, "key")
    return dict(pairs)


def _not_text(name: str, charset: str = "utf-8") -> ApiError:
    """A text field or query parameter whose bytes are not ``charset``: Starlette read a
    form's as Latin-1 (``\\xff\\xfe``: "ÿþ", unfiltered hits) and a query string's as U+FFFD."""
    code = "invalid_filter" if name in _FILTER_TEXT else "invalid_request"
    return ApiError(422, code, f"{name}: not valid {charset.upper()} text")


_FILTER_TEXT = frozenset({"category", "currency"})


class _FormParser(MultiPartParser):
    """Starlette's multipart parser with two checks it leaves out: ``closed``, whether the
    body reached its closing boundary (``--BOUNDARY--``: a body cut before it gave the parts
    read so far, the others silently dropped), and text fields that are not in the body's
    charset (UTF-8 unless it says another), refused rather than read as Latin-1."""

    closed = False

    def on_end(self) -> None:  # python-multipart calls it at the closing boundary only
        self.closed = True

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset)
            except UnicodeDecodeError:
                raise _not_text(part.field_name, self._charset) from None
        super().on_part_end()


async def _read_form(request: Request, max_bytes: int) -> FormData:
    """The upload's form, read as ``request.form()`` reads it (the byte cap, ``max_bytes``,
    is the middleware's), within the API's limits, and whole: a body cut before its
    closing boundary is refused (a form cut after its ``max_price`` part header searched
    unfiltered; cut inside the only image, it said "upload at least one file")."""
    try:
        async with aclosing(request.stream()) as stream:
            parser = _FormParser(request.headers, stream, max_files=MAX_QUERY_VECTORS,
                                 max_fields=64, max_part_size=64 * 1024)
            form = await parser.parse()
    except (BodyRefused, ClientDisconnect, ApiError):
        raise
    except MultiPartException as exc:  # starlette's own limits (too many files, ...)
        raise ApiError(400, "bad_upload", exc.message) from None
    except Exception as exc:
        raise ApiError(400, "bad_upload", f"unreadable multipart body: {exc}") from None
    if not parser.closed:
        await form.close()
        raise ApiError(400, "bad_upload", "the body ended before the form's closing boundary "
                       "(--BOUNDARY--): it was cut short, and the fields after the cut would "
                       "be missing")
    return form


def _within_pixels(images: Sequence[bytes], budget: int,
                   decode_sizes: Sequence[int | None]) -> None:
    """422 ``too_many_pixels`` when the uploaded views decode to more than ``budget`` pixels
    together (``serve.max_request_pixels``), read from their headers before any is decoded:
    each view was bound (``images.max_pixels``), the request not, and 16 single-colour PNGs
    of 36 MP (117 KiB each) held a search worker 37-68 s. A JPEG counts at the reduced
    scales it is decoded at for ``decode_sizes`` (the search's,
    :attr:`ProductSearch.query_decode_sizes`; :func:`embedding.decode.declared_pixels`): nine
    12 MP phone photos were refused, though each decodes to 0.19 MP. Read here, not in
    ``ProductSearch``: the CLI and ``eval`` keep their behaviour. A view that does not open
    counts for nothing: the decoder refuses it as before."""
    total = sum(declared_pixels(data, decode_sizes) or 0 for data in images)
    if total > budget:
        views = "the view has" if len(images) == 1 else f"the {len(images)} views have"
        together = "" if len(images) == 1 else " together"
        raise ApiError(422, "too_many_pixels", f"{views} {total:,} pixels{together}, over "
                       f"serve.max_request_pixels ({budget:,})")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
"""The codes of the refusals Starlette makes itself (an unknown path, a method a route does
not take); any other it might make is ``http_error``."""


def _allowed_methods(app: FastAPI, scope: Scope) -> set[str]:
    """Every method the request's path takes, for a 405's ``Allow`` (RFC 9110 15.5.6):
    Starlette names those of the first route on the path only, and ``/livez`` (a HEAD and a
    GET route) said ``Allow: HEAD``. A mount (the static files) takes GET and HEAD."""
    probe: Scope = {"type": "http", "path": scope["path"], "root_path": "",
                    "method": scope["method"]}
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(probe)
        if isinstance(route, routing.Mount) and match is routing.Match.FULL:
            methods |= {"GET", "HEAD"}
        elif match is routing.Match.PARTIAL:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def _error_handlers(app: FastAPI) -> None:
    """Map what a request can provoke to 4xx/503; nothing reaches the caller as a traceback."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _first_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})  # a 405's Allow: it was dropped
        if exc.status_code == 405 and (allowed := _allowed_methods(app, request.scope)):
            headers["Allow"] = ", ".join(sorted(allowed))
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                              str(exc.detail), headers=headers or None)

    @app.exception_handler(BodyRefused)
    async def body_refused(_: Request, exc: BodyRefused) -> Response:
        return refusal(exc)

    @app.exception_handler(ImageDecodeError)
    async def not_an_image(_: Request, exc: ImageDecodeError) -> JSONResponse:
        code = "too_many_pixels" if exc.reason == Reason.IMAGE_TOO_LARGE else "not_an_image"
        return error_response(422, code, exc.detail)

    @app.exception_handler(ProductNotFound)
    async def unknown_product(_: Request, exc: ProductNotFound) -> JSONResponse:
        return error_response(404, "unknown_product", str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc))

    @app.exception_handler(ModelMismatchError)
    async def mismatch(_: Request, exc: ModelMismatchError) -> JSONResponse:
        return error_response(503, "model_mismatch", str(exc))

