"""All configuration in one frozen object, read from ``LOOKALIKE_*`` environment variables.

Nested groups use ``__``: ``LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS``, ``LOOKALIKE_MILVUS__URI``.
The object is built once in ``main()`` and the pieces it configures are passed down; library
code never reads the environment itself.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from schema.versions import check_base


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


MAX_PORT = 65535
LOCAL_HOST = "127.0.0.1"
"""Where what this process serves listens by default: the API (``serve.host``) and ingest's
metrics (``ingest.metrics_host``); neither has authentication."""


def _listen_host(value: str) -> str:
    """An empty host is every interface (to uvicorn and to prometheus_client alike): nothing
    without authentication may be opened to the network by a variable that expanded to
    nothing."""
    if not value.strip():
        raise ValueError("empty; give an address (0.0.0.0 for every interface)")
    return value


ListenHost = Annotated[str, AfterValidator(_listen_host)]

_KAFKA_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}")
_KAFKA_IPV6 = re.compile(r"\[([^\[\]]+)\]")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def kafka_addresses(servers: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a ``host:port,...`` list, as the Kafka clients read it;
    ``ValueError`` names the first entry they could not use (kafka-python raised its own
    ``ValueError`` from inside the admin client for ``h:xx``, and waited out its bootstrap
    timeout for ``""``, ``,,,`` or a port out of range). An IPv6 host is written in brackets:
    ``[::1]:9092``."""
    pairs = []
    for entry in (e.strip() for e in servers.split(",")):
        shown = repr(entry if len(entry) <= 40 else f"{entry[:37]}...")
        host, colon, port = entry.rpartition(":")
        bracketed = _KAFKA_IPV6.fullmatch(host)
        if bracketed:
            try:
                IPv6Address(bracketed[1])
            except ValueError:
                bracketed = None
        if not colon or not (bracketed or _KAFKA_HOST.fullmatch(host)):
            raise ValueError(f"{shown} is not host:port (bootstrap servers are host:port "
                             "entries separated by commas; an IPv6 address in brackets)")
        number = port.isascii() and port.isdigit() and len(port) <= 5
        if not number or not 1 <= int(port) <= MAX_PORT:
            raise ValueError(f"{shown}: the port must be a number from 1 to {MAX_PORT}")
        pairs.append((bracketed[1] if bracketed else host, int(port)))
    return pairs


def kafka_topic(name: str) -> str:
    """``name`` if Kafka accepts it as a topic; kafka-python checks it only as the consumer
    subscribes (after the model loaded) and not at all as it publishes or creates topics."""
    if not _KAFKA_TOPIC.fullmatch(name) or name in (".", ".."):
        raise ValueError("a Kafka topic name is 1 to 249 of A-Z a-z 0-9 . _ - (not . or ..)")
    return name


class KafkaSettings(_Group):
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="host:port,... (port 1 to 65535; an IPv6 address in brackets)",
    )
    topic: str = Field(default="catalog.products",
                       description="Product events (1 to 249 of A-Z a-z 0-9 . _ -)")
    dlq_topic: str = Field(default="catalog.products.dlq",
                           description="Dead letters (the same rule; not the events' topic)")
    group_id: str = Field(default="lookalike-ingest",
                          description="Ingest processes of one group share the partitions "
                          "(not empty)")
    client_id: str = Field(default="lookalike", description="Prefix of the Kafka client ids")
    partitions: int = Field(default=4, ge=1, le=1000,
                            description="Used when the topic is created: bounds the consumers")
    session_timeout_ms: int = Field(
        default=10_000, ge=1000, le=1_800_000,
        description="A silent consumer leaves the group after it (at most a Kafka broker's "
        "default group.max.session.timeout.ms, 30 min)",
    )
    heartbeat_interval_ms: int = Field(default=1_000, ge=100, le=600_000,
                                       description="Below the session timeout")
    max_poll_records: int = Field(default=256, ge=1, le=100_000,
                                  description="Records one poll returns")
    connect_timeout_ms: int = Field(
        default=5_000, ge=100, le=600_000,
        description="How long publish and ingest wait for the broker to answer at start-up "
        "before they exit 4 with one line (kafka-python's own default is 30 s)",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _addresses(cls, value: str) -> str:
        kafka_addresses(value)
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return kafka_topic(value)

    @field_validator("dlq_topic")
    @classmethod
    def _dlq_topic(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("topic"):
            raise ValueError("the dead-letter topic must not be the events' topic: ingest "
                             "would read its own dead letters")
        return kafka_topic(value)

    @field_validator("group_id")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a consumer group id must not be empty")
        return value

    @field_validator("heartbeat_interval_ms")
    @classmethod
    def _heartbeat(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("session_timeout_ms")
        if session is not None and value >= session:  # kafka-python refuses it as it joins
            raise ValueError(f"must be below session_timeout_ms ({session})")
        return value


class MilvusSettings(_Group):
    uri: str = Field(default="./var/lookalike.db", min_length=1,
                     description="A Milvus Lite database path, or a server's http://host:19530")
    token: str = Field(default="", description="user:password or an API key, for a server")
    collection: Annotated[str, AfterValidator(check_base)] = Field(
        default="lookalike_images",
        description="Base name: the alias searches use; no __, not ending in _state, _models "
        "or _lease (docs/operations.md)",
    )
    consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        default="Bounded",
        description="Of serving searches (docs/scaling.md); the demo and eval read Strong",
    )
    lite_memory_index: bool = Field(
        default=True,
        description="Milvus Lite: answer searches from an exact in-memory copy of the images "
        "(~4 bytes x dimension per image, 590 MB at 100k 1,472-d images; docs/scaling.md)",
    )
    lite_process: bool = Field(
        default=True,
        description="Milvus Lite: run it in a child process of its own, which gives its "
        "Python work a core of its own (faster writes; docs/scaling.md); false: in this process",
    )
    lite_speedups: bool = Field(
        default=True,
        description="Milvus Lite in its own process: replace three slow steps of its write "
        "path (value-by-value checks and copies, compressed vector files) with equivalent "
        "ones (milvus-lite 3.2.x only; store/lite_process.py, docs/scaling.md)",
    )


def _cidr(value: str) -> str:
    ip_network(value, strict=False)
    return value


HOST_TRIP_AFTER = 2
"""Images of one host timing out in a row that make it rest (``host_rest_s``). One is not
enough: a single huge photo on a slow link times out on a healthy host."""
MAX_HOST_REST_S = 300
"""The longest rest: a host that stays silent is tried again at least this often."""


class ImageSettings(_Group):
    roots: list[Path] = Field(
        default_factory=list, description="Local folders that the catalog's image paths may "
        "point into: the only ones ingest, reindex, a search's re-ranking and compare-prices "
        "read listing photos from (also --image-root); a search's query path is the caller's"
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=600,
        description="Deadline per image URL: connect, headers, body and retries together",
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per image URL (transient "
                              "errors: connection, timeout, 429, 5xx)")
    retry_backoff_s: float = Field(default=0.25, ge=0, le=60,
                                   description="First retry delay; doubles")
    retry_after_max_s: float = Field(default=5.0, ge=0, le=600, description="Cap on a Retry-After")
    per_host_connections: int = Field(
        default=8, ge=1, le=256,
        description="Fetches of one host at once (ingest's other images of that host wait in a "
        "queue, not on a worker); below FETCH_WORKERS, a host that never answers leaves workers "
        "to the others until it rests, at the cost of what one host can fetch at once",
    )
    max_redirects: int = Field(default=5, ge=0, le=20, description="Redirect hops per image URL")
    allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs image URLs may reach besides public addresses (an internal CDN), "
        "e.g. '[\"10.20.0.0/16\"]' (docs/hardening.md)",
    )
    allow_hosts: list[str] = Field(
        default_factory=list, description="Host names image URLs may reach whatever they resolve to"
    )
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0, le=1024**3,
                           description="Of one image file")
    max_pixels: int = Field(default=40_000_000, gt=0, le=1_000_000_000,
                            description="Larger images are refused before decoding")

    @field_validator("allow_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [_cidr(v) for v in value]

    @field_validator("roots", mode="before")
    @classmethod
    def _no_empty_root(cls, value: object) -> object:
        """``""`` would be ``Path(".")``: the working directory, wherever that is."""
        if isinstance(value, list) and any(isinstance(v, str) and not v.strip() for v in value):
            raise ValueError("an image root must be a folder, not an empty path")
        return value
    fetch_workers: int = Field(default=8, ge=1, le=256, description="Images fetched at once")
    batch_fetch_budget_s: float = Field(
        default=120.0, gt=0, le=3600,
        description="Most time one ingest batch's images may take to fetch, however many of "
        "them wait for a slow host; images not fetched by then fail as `timeout` (the event "
        "keeps its other images). Below TIMEOUT_S it shortens the images' deadline too",
    )
    host_rest_s: float = Field(
        default=5.0, ge=0, le=MAX_HOST_REST_S,
        description=f"When {HOST_TRIP_AFTER} images of a host time out in a row, its next "
        "images fail at once (`timeout`) for this long; a timeout after a rest doubles it (up "
        f"to {MAX_HOST_REST_S:g} s), an answer from the host ends it. 0: hosts never rest",
    )
    decode_workers: int | None = Field(
        default=None, ge=1, le=256,
        description="Images decoded at once, on threads of their own (the fetch workers only "
        "fetch; a large photo's memory stays with these threads). Default: every core when "
        "the model runs on a GPU, else a quarter of them (at least 1): on CPU the model uses "
        "all cores, and more decoders only preempt it",
    )


class ModelSettings(_Group):
    variant: Literal["lite0", "lite1", "lite2"] = Field(
        default="lite0", description="EfficientNet-Lite size (lite2: ~3x slower, docs/quality.md)")
    square: Literal["pad", "crop"] = Field(
        default="pad", description="Pad photos to a square on white, or centre-crop them "
        "(docs/quality.md, Square input)")
    batch_size: int = Field(default=32, ge=1, le=1024, description="Images per model call")
    colour_weight: float = Field(
        default=0.5, ge=0, le=10,
        description="Weight of the product's colour histogram next to the CNN features "
        "(embedding/colour.py); 0 turns it off. Part of the model version. Chosen with "
        "`lookalike eval` (docs/quality.md): on luma-views 0.3 / 0.5 / 0.7 give R@1 0.53 / "
        "0.63 / 0.67 and R@5 0.78 / 0.87 / 0.85; on fmnist (grey, class level) mAP@R falls "
        "from 0.402 to 0.394 / 0.375 / 0.348. 0.5 has the best R@5 and a small fmnist loss",
    )
    path: Path | None = Field(
        default=None,
        description="A model directory written by `lookalike train`; its variant and square "
        "mode replace the two above (docs/training.md)",
    )
    compile_cache: Path | None = Field(
        default=Path("./var/compile-cache"),
        description="Keras on JAX only: compiled batch shapes are kept here, so a restarted "
        "ingest, search or train skips compiling them (docs/speed.md, \"On a GPU\"); empty: off",
    )

    @field_validator("path", "compile_cache", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """An empty value (``LOOKALIKE_MODEL__PATH=``) means none, not the working
        directory: no trained model, no compile cache."""
        return None if isinstance(value, str) and not value.strip() else value


class IngestSettings(_Group):
    batch_events: int = Field(default=64, ge=1, le=100_000,
                              description="Flush a batch at this many events")
    batch_images: int = Field(default=128, ge=1, le=100_000,
                              description="...or at this many images")
    batch_timeout_s: float = Field(default=0.5, gt=0, le=600, description="...or when this old")
    max_in_flight: int = Field(default=3, ge=1, le=64,
                               description="Batches in the pipeline at once")
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, le=3600, description="SIGTERM: how long in-flight batches may finish")
    outage_budget_s: float = Field(
        default=300.0, gt=0, le=7 * 86_400,
        description="How long ingest waits out Milvus or the broker being unavailable before "
        "it exits non-zero (nothing uncommitted is lost either way)",
    )
    metrics_host: ListenHost = Field(
        default=LOCAL_HOST, description="`lookalike ingest --metrics-port`: address its "
        "/metrics listens on (also --metrics-host; 0.0.0.0 for every interface, never empty)")
    metrics_linger_s: float = Field(
        default=0.0, ge=0, le=3600, description="`lookalike ingest --until-caught-up "
        "--metrics-port`: how long its /metrics stays up once the run caught up, so a scrape "
        "reads the final counts (SIGTERM or Ctrl-C end the wait; 0: exit at once)")


MAX_K = 1000
"""Most products one search returns (search/api.py checks it; the API and settings cap it)."""


class SearchSettings(_Group):
    k: int = Field(default=10, ge=1, le=MAX_K, description="Products a search returns")
    compare_k: int = Field(
        default=20, ge=1, le=MAX_K,
        description="Most similar products that price comparison looks at",
    )
    compare_threshold: float = Field(
        default=0.30, ge=-1, le=1, allow_inf_nan=False,  # nan: "finite", not "<= 1"
        description="Cosine similarity below which price comparison does not even verify a "
        "candidate as the same item (search/verify.py decides; see docs/matching.md). It only "
        "spares hopeless candidates the cost: 0.5 left re-shot listings unverified whose "
        "vector fell to 0.24-0.50 (docs/matching.md, \"A lower floor for verifying\")",
    )
    family_depth: int = Field(
        default=1000, ge=0, le=MAX_K,
        description="When price comparison's first candidates are a family of look-alikes "
        "(one pack layout's flavours), it follows them down to this many products, ranks "
        "those by keypoint votes and matches the 2 x compare_k with the most: ~0.3 s of CPU "
        "more than 400 for a family query with the listing photos cached, ~25 ms per listing "
        "photo not cached yet (a cold family query on 2 cores: ~19 s, ~9 s at 400); 400 "
        "missed re-shot and re-listed packs ranked deeper by vector (docs/matching.md, "
        "\"The whole family\"); 0: not below the first 3 x compare_k",
    )
    cutout_queries: bool = Field(
        default=True,
        description="Image searches also search with the photo's product cut out on white "
        "when its border does not tell its background (a snapshot, a re-shot pack): ~15 ms "
        "and one more embedding per such photo (docs/matching.md, \"Cut-out queries\")",
    )
    window_queries: bool = Field(
        default=True,
        description="...and with ten crops of it (its corners and centre at 60% and 75% of "
        "its sides): ten more embeddings per such photo, ~150 ms on 2 CPU cores "
        "(docs/matching.md, \"Window queries\")",
    )
    light_queries: bool = Field(
        default=True,
        description="...and such a photo is also searched under catalog light (each channel "
        "lifted so its brightest 1% is white, by at most 1.5x), its cut-out and windows cut "
        "from that: one more embedding per such photo (docs/matching.md, \"Scene queries "
        "under catalog light\")",
    )
    turned_queries: bool = Field(
        default=True,
        description="Price comparison also embeds the photo at its three quarter turns and, "
        "when one is clearly nearer the catalog (a phone photo saved sideways), searches and "
        "verifies it turned upright as well: three more embeddings and a small search per "
        "query, ~60 ms on 2 CPU cores (docs/matching.md, \"Turned photos\")",
    )
    similar_views: int = Field(
        default=3, ge=1, le=6,
        description="A `similar` photo search embeds each photo in this many channel orders "
        "(RGB, then GBR, BRG and the three swaps) and searches with their mean, so the CNN's "
        "colour cue counts less (a model without a colour block has one intent: no effect). "
        "The pictures a scene photo also searches with (under catalog light, cut-outs, "
        "windows) stay in one order: there the orders gained nothing on snapshots whose "
        "other colours are the answer and cost those whose own colour is, so a `similar` "
        "request makes `similar_views - 1` network passes a photo more than `exact` (at 3, a "
        "scene photo 15 instead of 13, not 39). "
        "At 3, on 2 CPU cores: the embedder alone on a photo on white 29 -> 76 ms of CPU; a "
        "scene photo's query vectors (decode, pictures, model) 0.36 -> 0.44 s (0.86 s with "
        "every picture in orders); vector R@1 on the other colours of a "
        "style 0.68 -> 0.74 (luma), 0.41 -> 0.49 (packs), 0.28 -> 0.48 (plain shapes), but "
        "0.40 -> 0.30 where the photo's own colour is also in the catalog (docs/matching.md, "
        "\"Channel orders\" and \"Channel orders on scene pictures\"); 1: the photo alone, "
        "as before",
    )
    silhouette_route: bool = Field(
        default=True,
        description="Price comparison may accept a plain product (few keypoints: a ball, a "
        "block, a bottle) with too few keypoint matches when its outline and its colour agree "
        "with the listing's; turn off for a catalog of plain look-alikes that share a shape "
        "and a colour, which it cannot tell apart (docs/matching.md, \"Silhouette route\")",
    )
    geometric_rerank: bool = Field(
        default=True,
        description="An image search checks the geometry (SIFT keypoints, RANSAC) of "
        "its first rerank_depth products against their listing photos, read through the image "
        "fetcher as price comparison reads them, and ranks those that agree first "
        "(docs/matching.md, \"Geometric re-ranking\")",
    )
    rerank_depth: int = Field(
        default=40, ge=1, le=MAX_K,
        description="Products whose geometry an image search checks: each a listing photo "
        "read (then cached) and matched, ~0.5 ms of CPU for a photo of one garment to ~10 ms "
        "for a shelf or a bin (matched copy by copy) with the photo cached; 20, the earlier "
        "depth, costs half and finds a pack in a row of its copies less often, its look-alikes "
        "ranking as near by vector (docs/matching.md, \"Every copy counted\")",
    )


class ServeSettings(_Group):
    host: ListenHost = Field(default=LOCAL_HOST, description="`lookalike serve`/`run`: address "
                             "to listen on (also --host; 0.0.0.0 for every interface, never "
                             "empty); the API has no authentication")
    port: int = Field(default=8080, ge=0, le=65535,
                      description="...and port (also --port; 0: the OS picks a free one, "
                      "which the log names)")
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0, le=1024**3,
                                  description="Largest request body (all uploaded views)")
    max_request_pixels: int = Field(default=100_000_000, gt=0, le=16_000_000_000,
                                    description="Most pixels of the views one API request "
                                    "uploads, together, read from their headers before any is "
                                    "decoded (a JPEG at the reduced scales it decodes at; each "
                                    "view is also within images.max_pixels); more is refused "
                                    "422")
    workers: int = Field(default=4, ge=1, le=256,
                         description="Queries embedded and searched at once")
    max_connections: int = Field(default=128, ge=1, le=65536,
                                 description="Connections and requests served at once; a "
                                 "request beyond them is answered 503 at once (uvicorn's "
                                 "limit_concurrency)")
    header_timeout_s: float = Field(default=15.0, gt=0, le=3600,
                                    description="Longest time to receive a request's line and "
                                    "headers, from the connection's opening or, on a kept-alive "
                                    "connection, their first byte; a slower client's connection "
                                    "is closed")
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600,
                                  description="Longest time to receive a request body; a "
                                  "slower one is answered 408 and its connection closed")
    body_idle_s: float = Field(default=10.0, gt=0, le=3600,
                               description="Longest pause within a request body (408 and "
                               "closed as well)")


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOKALIKE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    milvus: MilvusSettings = MilvusSettings()
    images: ImageSettings = ImageSettings()
    model: ModelSettings = ModelSettings()
    ingest: IngestSettings = IngestSettings()
    search: SearchSettings = SearchSettings()
    serve: ServeSettings = ServeSettings()
    log_level: LogLevel = Field(default="INFO", description="Also --log-level (any case)")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
