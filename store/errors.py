"""What a failed Milvus call means to its caller: wait and retry, or give up.

The store retries a transient failure a few times itself (short, bounded backoff). What still
fails is raised as one of two exceptions, so callers never inspect pymilvus or grpc types:

* :class:`StoreUnavailableError`: Milvus did not answer in time, refused for load, or is not
  ready (connectivity, timeouts, rate limits). Nothing is wrong with the request: the caller
  may wait it out and try the same work again (ingest keeps its batch uncommitted and retries).
* :class:`StoreError` (its base): anything else (a bad request, a schema mismatch, a bug).
  Retrying the same request gives the same answer.
"""

from __future__ import annotations

_TRANSIENT_WORDS = (
    "unavailable",
    "timeout",
    "timed out",
    "deadline",
    "rate limit",
    "ratelimit",
    "not ready",
    "connection",
    "channel not",
    "too many requests",
    "service unavailable",
)


def is_not_loaded(exc: BaseException) -> bool:
    """A collection that was loaded is not any more: a restarted Milvus 2.3 server comes back
    with its collections released (code 101). Loading them again makes the call work."""
    text = str(getattr(exc, "message", exc)).lower()
    return getattr(exc, "code", None) == 101 or "collection not loaded" in text


def is_not_found(exc: BaseException) -> bool:
    """Milvus does not know the collection (code 100). Normally final; but a restarted 2.3
    server answers it for a few seconds for collections it is still recovering, so the store
    treats it as transient shortly after it saw the server unreachable."""
    text = str(getattr(exc, "message", exc)).lower()
    return getattr(exc, "code", None) == 100 or "collection not found" in text


class StoreError(RuntimeError):
    """A Milvus call failed for good; nothing of the operation may be treated as done."""


class StoreUnavailableError(StoreError):
    """Milvus was unreachable, slow or overloaded after the store's own bounded retries:
    wait and try the same work again."""


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: connectivity, timeouts, rate limits, a server not ready yet."""
    if isinstance(exc, StoreUnavailableError):
        return True
    if isinstance(exc, StoreError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            return code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            )
    except ImportError:  # pragma: no cover - grpc comes with pymilvus
        pass
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    if isinstance(exc, MilvusUnavailableException):
        return True
    if isinstance(exc, MilvusException):
        if is_not_loaded(exc):  # the caller reloads (MilvusStore._call), then it is retried
            return True
        if getattr(exc, "code", None) in (8,):  # RATE_LIMIT
            return True
        text = str(getattr(exc, "message", exc)).lower()
        return any(w in text for w in _TRANSIENT_WORDS)
    return False
