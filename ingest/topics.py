"""Create the event and dead-letter topics when they do not exist yet."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap_servers: str, topics: dict[str, int], *, bootstrap_timeout_ms: int = 30_000
) -> None:
    """``topics`` maps a name to its partition count (used only when creating it).
    ``bootstrap_timeout_ms``: how long to wait for a broker (KafkaTimeoutError after it)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","),
                             bootstrap_timeout_ms=bootstrap_timeout_ms)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, parts, 1) for name, parts in topics.items() if name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
                log.info("created topics %s", [t.name for t in missing])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
