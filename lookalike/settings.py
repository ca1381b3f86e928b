"""All configuration in one frozen object, read from ``LOOKALIKE_*`` environment variables.

Nested groups use ``__``: ``LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS``, ``LOOKALIKE_MILVUS__URI``.
The object is built once in ``main()`` and the pieces it configures are passed down; library
code never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "catalog.products"
    dlq_topic: str = "catalog.products.dlq"
    group_id: str = "lookalike-ingest"
    client_id: str = "lookalike"
    partitions: int = Field(default=4, ge=1, description="Used when the topic is created")
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    max_poll_records: int = Field(default=256, ge=1)


class MilvusSettings(_Group):
    uri: str = "./var/lookalike.db"
    token: str = ""
    collection: str = "lookalike_images"
    consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = "Bounded"
    """Of serving searches (docs/scaling.md); writers and the demo choose their own."""


class ImageSettings(_Group):
    roots: list[Path] = Field(
        default_factory=list, description="Local folders that image paths may point into"
    )
    timeout_s: float = Field(default=10.0, gt=0)
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    fetch_workers: int = Field(default=8, ge=1, description="Images fetched at once")
    decode_workers: int | None = Field(
        default=None, ge=1,
        description="Images decoded at once (of the fetch workers). Default: every core when "
        "the model runs on a GPU, else a quarter of them (at least 1): on CPU the model uses "
        "all cores, and more decoders only preempt it",
    )


class ModelSettings(_Group):
    variant: Literal["lite0", "lite1", "lite2"] = "lite0"
    square: Literal["pad", "crop"] = "pad"
    batch_size: int = Field(default=32, ge=1)
    colour_weight: float = Field(
        default=0.5, ge=0, le=10,
        description="Weight of the product's colour histogram next to the CNN features "
        "(embedding/colour.py); 0 turns it off. Part of the model version",
    )


class IngestSettings(_Group):
    batch_events: int = Field(default=64, ge=1, description="Flush a batch at this many events")
    batch_images: int = Field(default=128, ge=1, description="...or at this many images")
    batch_timeout_s: float = Field(default=0.5, gt=0, description="...or when this old")
    max_in_flight: int = Field(default=3, ge=1, description="Batches in the pipeline at once")
    shutdown_grace_s: float = Field(default=30.0, ge=0)


class SearchSettings(_Group):
    k: int = Field(default=10, ge=1, le=1000)
    compare_threshold: float = Field(
        default=0.90, ge=-1, le=1,
        description="Cosine similarity above which two listings count as the same item "
        "(bench/threshold.py, default model: 97% of edited copies of a Luma photo score above "
        "it, 13% of the nearest other models and 23% of other colours of the same model)",
    )


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
    log_level: str = "INFO"
