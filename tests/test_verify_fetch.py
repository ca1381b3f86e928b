"""Price comparison reads listing photos with the configured fetch policy (the one ingest and
reindex use: ``lookalike.app.build_fetcher``), never with a default one of its own."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lookalike.app import build_fetcher, build_verifier
from lookalike.settings import Settings
from schema.collection import CollectionSpec
from search.api import ProductSearch
from search.features import photo_features
from store import MilvusStore, parse_engine
from tests import milvus_support
from tests.fakes import textured_photo
from tests.milvus_support import DIM, FakeEmbedder


def _png() -> bytes:
    buf = io.BytesIO()
    textured_photo(3).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def listing_url() -> Iterator[str]:
    """A listing photo served on loopback: an internal CDN, as far as the egress policy sees."""
    body = _png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/listing.png"
    server.shutdown()
    server.server_close()


def _verdict(settings: Settings, url: str) -> tuple[bool, str]:
    evidence = build_verifier(settings).verify(photo_features(textured_photo(3)),
                                               [(url, 0.99)])[0]
    return evidence.same_item, evidence.reason


def test_the_verifier_fetches_with_the_configured_allow_lists(listing_url: str) -> None:
    allowed = Settings.model_validate({"images": {"allow_networks": ["127.0.0.0/8"]}})
    same, why = _verdict(allowed, listing_url)
    assert same, why
    by_host = Settings.model_validate({"images": {"allow_hosts": ["127.0.0.1"]}})
    assert _verdict(by_host, listing_url)[0]


def test_without_an_allow_list_an_internal_listing_is_refused_with_its_reason(
        listing_url: str) -> None:
    same, why = _verdict(Settings(), listing_url)
    assert not same
    assert "unavailable" in why and "address_not_allowed" in why


def test_the_verifier_rule_follows_the_silhouette_route_setting(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    assert build_verifier(Settings()).rule.silhouette_route
    monkeypatch.setenv("LOOKALIKE_SEARCH__SILHOUETTE_ROUTE", "false")
    assert not build_verifier(Settings()).rule.silhouette_route


def test_a_given_fetcher_is_the_one_used(listing_url: str) -> None:
    """One fetcher (and so one policy, one per-host limit) can serve ingest and the verifier."""
    allowed = Settings.model_validate({"images": {"allow_networks": ["127.0.0.0/8"]}})
    shared = build_fetcher(allowed.images)
    verifier = build_verifier(Settings(), fetcher=shared)  # settings' own policy not used
    evidence = verifier.verify(photo_features(textured_photo(3)), [(listing_url, 0.99)])[0]
    assert evidence.same_item, evidence.reason


def test_compare_prices_without_a_verifier_says_how_to_build_one() -> None:
    """No silent fallback to a verifier with a default fetch policy."""
    class NoCollections:  # compare_prices must refuse before any search
        def has_collection(self, name: str, **kw: object) -> bool:
            return False

    store = MilvusStore(NoCollections(), engine=parse_engine("v2.3.5"))
    search = ProductSearch(store, CollectionSpec(name="c", dim=DIM),
                           FakeEmbedder(), consistency="Strong",
                           max_pixels=milvus_support.MAX_PIXELS)
    with pytest.raises(ValueError, match="build_verifier"):
        search.compare_prices(product_id="p1")
