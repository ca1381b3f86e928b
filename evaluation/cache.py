"""Embeddings cached by image content and model version, so re-running an evaluation only
searches. One SQLite file: safe to share between runs, stdlib only.

The cache only saves work: a write that fails (a read-only file, a full disk) is one warning,
and the run goes on with the vectors it has, without saving."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger("lookalike")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_version TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model_version, content_sha256)
)
"""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """``(model_version, sha256 of the image bytes) -> float32 vector``."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the cache at ``path``; :class:`OSError` or :class:`sqlite3.Error`
        when it cannot be (a folder, a file that is not SQLite, a parent that cannot be made)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.unwritable: str | None = None
        """Why the cache could not be written, once a write has failed (later ones are
        skipped); None while it can be."""
        self._db = sqlite3.connect(path)
        try:
            self._db.execute(_SCHEMA)
            self._db.commit()
        except sqlite3.Error:
            self._db.close()
            raise

    def get_many(self, model_version: str, hashes: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        found: dict[str, NDArray[np.float32]] = {}
        unique = sorted(set(hashes))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT content_sha256, vector FROM embeddings "
                f"WHERE model_version = ? AND content_sha256 IN ({marks})",
                [model_version, *chunk],
            )
            for digest, blob in rows:
                found[digest] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(
        self, model_version: str, items: Iterable[tuple[str, NDArray[np.float32]]]
    ) -> None:
        """Save ``items``; when they cannot be (the file is read-only, the disk is full), say
        so once and skip this and every later write: the caller has the vectors."""
        if self.unwritable is not None:
            return
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model_version, digest, np.asarray(v, dtype=np.float32).tobytes())
                 for digest, v in items],
            )
            self._db.commit()
        except sqlite3.Error as exc:
            self.unwritable = str(exc)
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            log.warning("cache not written: %s: %s; the run goes on without saving",
                        self.path, exc)

    def close(self) -> None:
        self._db.close()
