"""The HTTP API on Milvus Lite with a fake embedder: answers, every bad input, image serving,
probes and metrics. No model and no broker are needed."""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from schema.errors import Reason
from search.api import Hit, StoredPhotoUnreadable
from serve.api import ServeConfig
from tests.milvus_support import FakeEmbedder
from tests.serve_support import RED, Served, build_served, png


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from build_served(tmp_path_factory.mktemp("serve"), max_pixels=100_000)


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[TestClient]:
    with TestClient(served.app) as client:  # a 500 would raise here: none is expected
        yield client


def upload(http: TestClient, *images: bytes, path: str = "/v1/search",
           **fields: Any) -> Any:
    files = [("image", (f"q{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return http.post(path, files=files, data=fields)


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert body["error"]["message"]
    return str(body["error"]["code"])


# -- answers -----------------------------------------------------------------------------


def test_search_by_upload_returns_the_same_hits_as_the_module(
        http: TestClient, served: Served) -> None:
    response = upload(http, png(RED), k="3")
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [h["product_id"] for h in hits] == ["red-tee", "red-tee-resale", "red-dress"]
    expected = served.search.by_image(png(RED), k=3)
    assert hits == [h.model_dump(mode="json") for h in expected]
    assert set(hits[0]) == set(Hit.model_fields)


def test_several_views_are_searched_together(http: TestClient) -> None:
    response = upload(http, png((0, 0, 200)), png(RED), k="2")
    assert [h["product_id"] for h in response.json()["hits"]] == ["red-tee", "red-tee-resale"]


def test_filters_change_the_hits(http: TestClient) -> None:
    response = upload(http, png(RED), k="5", category="Men/Tops", max_price="25",
                      currency="USD")
    ids = [h["product_id"] for h in response.json()["hits"]]
    assert ids == ["red-tee", "red-tee-resale", "far"]


def test_search_by_vector_and_by_product(http: TestClient) -> None:
    by_vector = http.post("/v1/search", json={"vector": [1.0] + [0.0] * 7, "k": 2})
    assert [h["product_id"] for h in by_vector.json()["hits"]] == ["red-tee", "red-tee-resale"]
    by_product = http.post("/v1/search", json={"product_id": "red-tee", "k": 2,
                                               "categories": ["Men"]})
    ids = [h["product_id"] for h in by_product.json()["hits"]]
    assert ids[0] == "red-tee-resale" and "red-tee" not in ids
    similar = http.get("/v1/products/red-tee/similar", params={"k": 2, "category": "Men"})
    assert similar.json() == by_product.json()


def test_compare_prices_is_cheapest_first(http: TestClient) -> None:
    by_product = http.post("/v1/compare-prices", json={"product_id": "red-tee",
                                                       "threshold": 0.5})
    body = by_product.json()
    assert body["threshold"] == 0.5
    matches = body["matches"]
    assert [m["product_id"] for m in matches][:2] == ["red-tee-resale", "red-top-eur"]
    assert all(m["similarity"] >= 0.5 for m in matches)
    by_image = upload(http, png(RED), path="/v1/compare-prices", threshold="0.85",
                      currency="USD")
    assert [m["product_id"] for m in by_image.json()["matches"]] == [
        "red-tee-resale", "red-tee", "red-dress"]


# -- bad input: always a 4xx naming the problem ------------------------------------------

BAD_JSON_SEARCHES = [
    ({"vector": [1.0] * 3}, "invalid_request"),                      # wrong dimension
    ({"vector": [0.0] * 8}, "invalid_request"),                      # zero vector
    ({"vector": [1.0] * 8, "product_id": "red-tee"}, "invalid_request"),
    ({}, "invalid_request"),
    ({"vector": ["0.1"] + [1.0] * 7}, "invalid_request"),           # a string, not a number
    ({"vector": [True] + [1.0] * 7}, "invalid_request"),            # a boolean, not a number
    ({"vector": [1.0] * 8, "k": 0}, "invalid_request"),
    ({"vector": [1.0] * 8, "k": 1001}, "invalid_request"),
    ({"vector": [1.0] * 8, "k": "ten"}, "invalid_request"),
    ({"vector": [1.0] * 8, "match": "roughly"}, "invalid_request"),
    ({"vector": [1.0] * 8, "categories": ["Men\x00/Tops"]}, "invalid_filter"),
    ({"vector": [1.0] * 8, "categories": ["x" * 5000]}, "invalid_filter"),
    ({"vector": [1.0] * 8, "currency": "USD' or 1==1"}, "invalid_filter"),
    ({"vector": [1.0] * 8, "min_price": -1}, "invalid_request"),
    ({"vector": [1.0] * 8, "max_price": "cheap"}, "invalid_request"),
    ({"product_id": "a\x00b"}, "invalid_request"),
    ({"image_url": "http://169.254.169.254/latest/meta-data"}, "invalid_request"),
    ({"vector": [1.0] * 8, "filter": "price > 0 or true"}, "invalid_request"),
    # numbers must be JSON numbers, as in "vector": these were read as 1, 1, 5, 50 and 2
    ({"vector": [1.0] * 8, "max_price": True}, "invalid_request"),
    ({"vector": [1.0] * 8, "k": True}, "invalid_request"),
    ({"vector": [1.0] * 8, "k": "5"}, "invalid_request"),
    ({"vector": [1.0] * 8, "min_price": "50"}, "invalid_request"),
    ({"vector": [1.0] * 8, "k": 2.0}, "invalid_request"),
    # an empty filter value is refused, not taken for an absent one (unfiltered hits)
    ({"product_id": "red-tee", "currency": ""}, "invalid_filter"),
    ({"product_id": "red-tee", "categories": [""]}, "invalid_filter"),
]


@pytest.mark.parametrize(("body", "code"), BAD_JSON_SEARCHES)
def test_bad_json_search_is_a_422(http: TestClient, body: dict[str, Any], code: str) -> None:
    assert error_code(http.post("/v1/search", json=body), 422) == code


def test_nan_in_a_vector_is_refused(http: TestClient) -> None:
    raw = '{"vector": [NaN, 1, 1, 1, 1, 1, 1, 1]}'  # Python's JSON reader accepts NaN
    response = http.post("/v1/search", content=raw,
                         headers={"content-type": "application/json"})
    assert error_code(response, 422) == "invalid_request"


def test_a_vector_s_scale_does_not_matter_and_no_score_is_null(http: TestClient) -> None:
    """1e39 became infinity in float32 and was refused (after a numpy ``RuntimeWarning`` in
    the log); 1e38s overflowed the norm and every score was 0.0 (NaN, ``null``, for
    ``similar`` with a colour block). The vector is normalised in float64: any finite,
    non-zero vector is its direction, with no warning."""

    def hits(vector: list[float], match: str) -> list[tuple[str, float]]:
        response = http.post("/v1/search", json={"vector": vector, "k": 3, "match": match})
        assert response.status_code == 200, response.text
        return [(h["product_id"], h["score"]) for h in response.json()["hits"]]

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for match in ("exact", "similar"):
            for scaled, plain in (([1e39] + [1.0] * 7, [1.0] + [0.0] * 7),
                                  ([1e38] * 8, [1.0] * 8), ([1e-30] * 8, [1.0] * 8)):
                got, expected = hits(scaled, match), hits(plain, match)
                assert [pid for pid, _ in got] == [pid for pid, _ in expected]
                assert [score for _, score in got] == pytest.approx(
                    [score for _, score in expected], abs=1e-6)
    infinite = http.post("/v1/search", content='{"vector": [1e400, 1, 1, 1, 1, 1, 1, 1]}',
                         headers={"content-type": "application/json"})
    assert error_code(infinite, 422) == "invalid_request"
    assert "NaN or infinite" in infinite.json()["error"]["message"]


def test_not_json_and_not_an_object(http: TestClient) -> None:
    bad = http.post("/v1/search", content=b"{nope", headers={"content-type": "application/json"})
    assert error_code(bad, 400) == "bad_json"
    assert error_code(http.post("/v1/search", json=[1, 2]), 422) == "invalid_request"


@pytest.mark.parametrize("path", ["/v1/search", "/v1/compare-prices"])
def test_deeply_nested_json_is_a_400(http: TestClient, path: str) -> None:
    """200,000 levels made ``json.loads`` raise RecursionError: a 500 with a traceback."""
    for depth in (17, 50_000):
        deep = "[" * depth + "]" * depth
        response = http.post(path, content=deep, headers={"content-type": "application/json"})
        assert error_code(response, 400) == "bad_json"
        assert "nesting deeper than 16 levels" in response.json()["error"]["message"]
    in_text = {"product_id": "red-tee", "currency": "[[[[" * 10}  # brackets in a string
    assert error_code(http.post(path, json=in_text), 422) == "invalid_filter"


def test_unknown_product_is_a_404(http: TestClient) -> None:
    assert error_code(http.post("/v1/search", json={"product_id": "nope"}), 404) == \
        "unknown_product"
    assert error_code(http.get("/v1/products/nope/similar"), 404) == "unknown_product"
    assert error_code(http.post("/v1/compare-prices", json={"product_id": "nope"}), 404) == \
        "unknown_product"


def test_upload_that_is_not_an_image(http: TestClient) -> None:
    assert error_code(upload(http, b"%PDF-1.4 not a picture"), 422) == "not_an_image"
    assert error_code(upload(http, b""), 422) == "not_an_image"


def test_upload_with_too_many_pixels(http: TestClient) -> None:
    # the fixture's searcher allows 100k pixels; 400x400 = 160k (still a tiny PNG file)
    assert error_code(upload(http, png(RED, 400)), 422) == "too_many_pixels"


class CountedViews:
    """A search's ``by_images``, noting how many views each call got."""

    def __init__(self, by_images: Any) -> None:
        self.by_images, self.views = by_images, list[int]()

    def __call__(self, images: list[bytes], **options: Any) -> list[Hit]:
        self.views.append(len(images))
        return list(self.by_images(images, **options))


def test_views_over_the_request_pixel_budget_are_refused_before_any_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each view was bounded (``images.max_pixels``), a request's views together were not:
    16 single-colour PNGs of 36 MP (117 KiB each) held a search worker 37-68 s. Their
    headers are read before any is decoded (``serve.max_request_pixels``)."""
    view = png(RED, 1000)  # 1,000,000 pixels in a few KiB
    for served in build_served(tmp_path, config=ServeConfig(max_request_pixels=2_000_000)):
        searched = CountedViews(served.search.by_images)
        monkeypatch.setattr(served.search, "by_images", searched)
        with TestClient(served.app) as http:
            over = upload(http, view, view, view, k="2")
            assert error_code(over, 422) == "too_many_pixels"
            assert over.json()["error"]["message"] == (
                "the 3 views have 3,000,000 pixels together, over serve.max_request_pixels "
                "(2,000,000)")
            assert searched.views == []
            within = upload(http, view, view, k="2")  # the budget itself is not over it
            assert within.status_code == 200, within.text
            assert [h["product_id"] for h in within.json()["hits"]] == ["red-tee",
                                                                        "red-tee-resale"]
            assert searched.views == [2]
            unreadable = upload(http, view, view, b"not an image")  # counted as nothing
            assert error_code(unreadable, 422) == "not_an_image"
            one = upload(http, png(RED, 1500), path="/v1/compare-prices")
            assert error_code(one, 422) == "too_many_pixels"
            assert one.json()["error"]["message"] == (
                "the view has 2,250,000 pixels, over serve.max_request_pixels (2,000,000)")


def test_a_jpeg_view_counts_at_the_scale_it_is_decoded_at(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phone photos are JPEGs, decoded at the reduced scales that cover the search's squares
    (224 and 320 px): nine 12 MP photos were refused under the 100 MP budget though each
    decodes to 0.19 MP. A 1000 px JPEG counts at a quarter and at half size (62,500 +
    250,000 pixels: the scales that cover 224 and 320 px, both held while it is searched),
    a 1000 px PNG once at full size."""
    monkeypatch.setattr(FakeEmbedder, "decode_size", 224, raising=False)
    out = io.BytesIO()
    Image.new("RGB", (1000, 1000), RED).save(out, format="JPEG")
    photo = out.getvalue()
    for served in build_served(tmp_path, config=ServeConfig(max_request_pixels=1_000_000)):
        assert served.search.query_decode_sizes == (224, 320)  # the model's, VERIFY_SIZE
        corner = Image.open(io.BytesIO(photo)).convert("RGB").getpixel((0, 0))
        assert isinstance(corner, tuple)
        served.embedder.picture((corner[0], corner[1], corner[2]), [1.0] + [0.0] * 7)  # as RED
        with TestClient(served.app) as http:
            within = upload(http, photo, photo, photo, k="2")
            assert within.status_code == 200, within.text
            assert [h["product_id"] for h in within.json()["hits"]][:1] == ["red-tee"]
            over = upload(http, photo, photo, photo, photo, k="2")
            assert error_code(over, 422) == "too_many_pixels"
            assert over.json()["error"]["message"] == (
                "the 4 views have 1,250,000 pixels together, over serve.max_request_pixels "
                "(1,000,000)")
            assert error_code(upload(http, png(RED, 1001), k="2"), 422) == "too_many_pixels"


def test_upload_over_the_size_cap(http: TestClient) -> None:
    big = os.urandom(300_000)  # cap is 200 kB
    assert error_code(upload(http, big), 413) == "upload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(110):  # past the JSON cap (1 MiB), not the upload cap of a test's
            yield b"x" * 10_000

    chunked = http.post("/v1/search", content=chunks(),
                        headers={"content-type": "application/json"})
    assert error_code(chunked, 413) == "upload_too_large"


def test_too_many_views_and_missing_file(http: TestClient) -> None:
    response = upload(http, *[png(RED, 4)] * 17)
    assert 400 <= response.status_code < 500 and "Traceback" not in response.text
    no_file = http.post("/v1/search", files={"other": ("a.png", png(RED), "image/png")})
    assert error_code(no_file, 422) == "missing_image"
    assert error_code(upload(http, png(RED), k="-3"), 422) == "invalid_request"
    assert error_code(upload(http, png(RED), min_price="nan"), 422) == "invalid_request"


def test_similar_refuses_bad_query_parameters_in_one_line(http: TestClient) -> None:
    """Unknown parameters were ignored (``cateogry=Men``: unfiltered hits) and more than 64
    categories were a multi-line pydantic dump; the JSON body refuses both in one line."""
    typo = http.get("/v1/products/red-tee/similar", params={"cateogry": "Men"})
    assert error_code(typo, 422) == "invalid_request"
    assert typo.json()["error"]["message"] == "cateogry: Extra inputs are not permitted"
    body = http.post("/v1/search", json={"product_id": "red-tee", "cateogry": "Men"})
    assert error_code(body, 422) == "invalid_request"
    many = http.get("/v1/products/red-tee/similar", params={"category": ["Men"] * 65})
    assert error_code(many, 422) == "invalid_request"
    message = many.json()["error"]["message"]
    assert "\n" not in message and message.startswith("category: List should have at most 64")
    hostile = http.get("/v1/products/red-tee/similar", params={"category": "Men\x00"})
    assert error_code(hostile, 422) == "invalid_filter"
    fine = http.get("/v1/products/red-tee/similar", params={"category": ["Men"] * 64, "k": 2})
    assert fine.status_code == 200, fine.text


def test_text_options_are_numbers_only_when_written_as_numbers(http: TestClient) -> None:
    """Form fields and query strings are text: "2" and "25" are numbers there, "true" is
    not (a JSON ``true`` was read as 1), nor ``nan``; an empty currency is refused there
    too (it was read as none: unfiltered)."""
    assert upload(http, png(RED), k="2", max_price="25").status_code == 200
    similar = http.get("/v1/products/red-tee/similar", params={"k": "2", "max_price": "25"})
    assert similar.status_code == 200, similar.text
    compared = upload(http, png(RED), path="/v1/compare-prices", threshold="0.85", k="3")
    assert compared.status_code == 200, compared.text
    for field, text in (("k", "true"), ("k", "2.0"), ("max_price", "true"),
                        ("min_price", "nan"), ("max_price", "5 dollars")):
        assert error_code(upload(http, png(RED), **{field: text}), 422) == "invalid_request"
        query = http.get("/v1/products/red-tee/similar", params={field: text})
        assert error_code(query, 422) == "invalid_request"
    assert error_code(upload(http, png(RED), path="/v1/compare-prices", threshold="true"),
                      422) == "invalid_request"
    assert error_code(upload(http, png(RED), currency=""), 422) == "invalid_filter"
    assert error_code(http.get("/v1/products/red-tee/similar", params={"currency": ""}),
                      422) == "invalid_filter"


def test_a_form_refuses_fields_it_would_ignore(http: TestClient) -> None:
    """``categories`` (the JSON name) and a file under another name than ``image``."""
    plural = upload(http, png(RED), categories="Women")
    assert error_code(plural, 422) == "invalid_request"
    assert "'category'" in plural.json()["error"]["message"]
    files = [("image", ("q.png", png(RED), "image/png")),
             ("photo", ("p.png", png(RED), "image/png"))]
    assert error_code(http.post("/v1/search", files=files), 422) == "invalid_request"


def test_no_route_takes_a_path_or_url_for_the_query_photo(http: TestClient) -> None:
    """``ProductSearch`` reads a string image as the caller's own file: the HTTP API passes it
    uploaded bytes only. A JSON ``image`` field is an unknown field, and an ``image`` form
    field sent as text rather than as a file is no upload."""
    for path in ("/v1/search", "/v1/compare-prices"):
        for ref in ("/etc/passwd", "file:///etc/passwd", "http://169.254.169.254/"):
            as_json = http.post(path, json={"image": ref, "product_id": "red-tee"})
            assert error_code(as_json, 422) == "invalid_request"
            as_text = http.post(path, files={"image": (None, ref)})
            assert error_code(as_text, 422) == "missing_image"


def test_a_category_sent_as_a_file_is_refused(http: TestClient) -> None:
    """It was dropped: the filter ignored, unfiltered hits returned."""
    files = [("image", ("q.png", png(RED), "image/png")),
             ("category", ("c.txt", b"Women", "text/plain"))]
    refused = http.post("/v1/search", files=files, data={"k": "3"})
    assert error_code(refused, 422) == "invalid_request"
    assert "category" in refused.json()["error"]["message"]


def test_a_parameter_given_twice_is_refused(http: TestClient) -> None:
    """The last one won: ``k=1&k=3`` searched for 3, two ``product_id`` keys the second."""
    files = [("image", ("q.png", png(RED), "image/png"))]
    form = http.post("/v1/search", files=files, data={"k": ["1", "3"]})
    assert error_code(form, 422) == "invalid_request"
    assert "k: the field is given twice" in form.json()["error"]["message"]
    query = http.get("/v1/products/red-tee/similar?k=1&k=3")
    assert error_code(query, 422) == "invalid_request"
    assert http.get("/v1/products/red-tee/similar?k=1&category=Men&category=Women"
                    ).status_code == 200  # category repeats by design
    image = http.get("/v1/images?ref=a&ref=b")
    assert error_code(image, 422) == "invalid_request"
    for body in ('{"product_id": "red-tee", "k": 1, "k": 3}',
                 '{"product_id": "red-tee", "product_id": "far"}',
                 '{"product_id": "red-tee", "categories": ["Women"], "categories": []}'):
        duplicate = http.post("/v1/search", content=body,
                              headers={"content-type": "application/json"})
        assert error_code(duplicate, 422) == "invalid_request", body
        assert "given twice" in duplicate.json()["error"]["message"]
    compare = http.post("/v1/compare-prices", content='{"product_id": "a", "product_id": "b"}',
                        headers={"content-type": "application/json"})
    assert error_code(compare, 422) == "invalid_request"


def test_compare_prices_bad_input(http: TestClient) -> None:
    assert error_code(http.post("/v1/compare-prices", json={}), 422) == "invalid_request"
    assert error_code(http.post("/v1/compare-prices",
                                json={"product_id": "red-tee", "threshold": 2}), 422) == \
        "invalid_request"
    both = upload(http, png(RED), path="/v1/compare-prices", product_id="red-tee")
    assert error_code(both, 422) == "invalid_request"
    intent = http.post("/v1/compare-prices", json={"product_id": "red-tee", "match": "similar"})
    assert error_code(intent, 422) == "invalid_request"  # comparison is always the same item
    huge = "1" + "0" * 400  # a JSON integer beyond a float: was a 500 (OverflowError)
    for field in ("threshold", "max_price", "min_price"):
        raw = http.post("/v1/compare-prices", content=f'{{"product_id": "red-tee", "{field}": '
                        f'{huge}}}', headers={"content-type": "application/json"})
        assert error_code(raw, 422) == "invalid_request", field
        assert "401 digits" in raw.json()["error"]["message"], raw.text
        raw = http.post("/v1/search", content=f'{{"product_id": "red-tee", "{field}": {huge}}}',
                        headers={"content-type": "application/json"})
        assert raw.status_code == 422, (field, raw.text)
    for threshold in ("0.5", True):  # were read as 0.5 and 1.0
        strict = http.post("/v1/compare-prices", json={"product_id": "red-tee",
                                                       "threshold": threshold})
        assert error_code(strict, 422) == "invalid_request"
    empty = http.post("/v1/compare-prices", json={"product_id": "red-tee", "currency": ""})
    assert error_code(empty, 422) == "invalid_filter"


class UnreadableListings:
    """Price comparison whose listing photos cannot be read (the image roots)."""

    query_decode_sizes = (None,)

    def compare_prices(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise StoredPhotoUnreadable(Reason.PATH_NOT_ALLOWED,
                                    "none of the 3 candidate listing photos could be read")


def test_unreadable_listing_photos_are_a_503_for_an_upload_too(tmp_path: Path) -> None:
    """The upload's comparison mapped any image error to the upload (422 not_an_image)."""
    for served in build_served(tmp_path, search=UnreadableListings()):
        with TestClient(served.app) as http:
            by_image = upload(http, png(RED), path="/v1/compare-prices")
            assert error_code(by_image, 503) == "stored_image_unreadable"
            assert "path_not_allowed" in by_image.json()["error"]["message"]
            by_id = http.post("/v1/compare-prices", json={"product_id": "red-tee"})
            assert error_code(by_id, 503) == "stored_image_unreadable"


def test_unknown_route_and_method_are_json(http: TestClient) -> None:
    assert error_code(http.get("/v1/nothing"), 404) == "not_found"
    assert http.get("/v1/search").status_code == 405


def test_a_method_a_route_does_not_take_is_a_405_naming_those_it_does(
        http: TestClient, served: Served) -> None:
    """The 405s had no ``Allow`` (RFC 9110 15.5.6 requires it; the handler dropped the one
    Starlette gives, which names the first route on the path only: HEAD for ``/livez``) and
    the undocumented code ``http_error``."""
    image = str(served.image_root / "red-tee.png")
    for method, path, allowed in (
            ("DELETE", "/livez", "GET, HEAD"), ("GET", "/v1/search", "POST"),
            ("PUT", f"/v1/images?ref={image}", "GET, HEAD"), ("POST", "/", "GET, HEAD"),
            ("GET", "/v1/compare-prices", "POST"), ("POST", "/static/app.js", "GET, HEAD"),
            ("DELETE", "/v1/products/red-tee/similar", "GET, HEAD")):
        response = http.request(method, path)
        assert error_code(response, 405) == "method_not_allowed", (method, path)
        assert response.headers["allow"] == allowed, (method, path)


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(http: TestClient) -> None:
    """``/livez/`` was a 307 to ``http://evil.example/livez``, its Location taken from the
    Host header (behind a cache, a poisoned redirect for everyone)."""
    for path in ("/livez/", "/readyz/", "/docs/", "/v1/products/red-tee/similar/"):
        response = http.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert error_code(response, 404) == "not_found", path
        assert "location" not in response.headers, path
    posted = http.post("/v1/search/", json={"product_id": "red-tee"}, follow_redirects=False)
    assert error_code(posted, 404) == "not_found"
    assert http.get("/", headers={"Host": "evil.example"}).status_code == 200


def test_each_intent_is_passed_on(http: TestClient, served: Served,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``match`` reaches the search as sent, and an absent one leaves the method's default."""
    seen: list[dict[str, Any]] = []
    real = served.search.by_vector

    def by_vector(*args: Any, **kwargs: Any) -> list[Hit]:
        seen.append({k: v for k, v in kwargs.items() if k == "match"})
        return real(*args, **kwargs)

    monkeypatch.setattr(served.search, "by_vector", by_vector)
    for body in ({"match": "exact"}, {"match": "similar"}, {}):
        response = http.post("/v1/search", json={"vector": [1.0] + [0.0] * 7, **body})
        assert response.status_code == 200, response.text
        assert response.json()["hits"][0]["product_id"] == "red-tee"
    assert seen == [{"match": "exact"}, {"match": "similar"}, {}]


# -- bodies: one reading of their type, whole forms, text that is text -------------------

BOUNDARY = "lookalike-test-7d2c"


def form_body(*images: bytes, end: bytes = b"--\r\n", **fields: bytes) -> bytes:
    """A multipart body written by hand (``end``: what follows the last ``--BOUNDARY``), as
    httpx, requests, curl and browsers write one: files, then fields."""
    out = b""
    for i, data in enumerate(images):
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="q{i}.png"\r\nContent-Type: image/png\r\n\r\n').encode() + data + b"\r\n"
    for name, value in fields.items():
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                ).encode() + value + b"\r\n"
    return out + f"--{BOUNDARY}".encode() + end


def post_form(http: TestClient, body: bytes, path: str = "/v1/search",
              content_type: str = f"multipart/form-data; boundary={BOUNDARY}") -> Any:
    return http.post(path, content=body, headers={"content-type": content_type})


def test_a_media_type_is_read_whatever_its_case(http: TestClient) -> None:
    """``Multipart/Form-Data`` (RFC 9110: case-insensitive) was read as JSON, 400 "nesting
    deeper than 16 levels", and a large one had the JSON cap; parameters and spaces aside."""
    body = form_body(png(RED), k=b"3")
    for content_type in (f"Multipart/Form-Data; boundary={BOUNDARY}",
                         f" MULTIPART/FORM-DATA ;boundary={BOUNDARY}",
                         f"multipart/form-data;\tboundary={BOUNDARY}; charset=UTF-8"):
        response = post_form(http, body, content_type=content_type)
        assert response.status_code == 200, (content_type, response.text)
        assert [h["product_id"] for h in response.json()["hits"]] == [
            "red-tee", "red-tee-resale", "red-dress"]
    big = form_body(os.urandom(300_000))  # over the upload cap (200 kB), under the JSON cap
    refused = post_form(http, big, content_type=f"Multipart/Form-Data; boundary={BOUNDARY}")
    assert error_code(refused, 413) == "upload_too_large"
    as_json = http.post("/v1/search", content='{"product_id": "red-tee", "k": 2}',
                        headers={"content-type": "Application/JSON; charset=utf-8"})
    assert as_json.status_code == 200, as_json.text


def test_two_content_types_are_refused_before_the_body(http: TestClient,
                                                       served: Served) -> None:
    """The cap read the last Content-Type and the API the first: a JSON body declared as
    JSON, then as multipart, passed the JSON cap (tests/test_serve_limits.py, over a socket)."""
    before = served.registry.get_sample_value(
        "lookalike_http_requests_total", {"endpoint": "/v1/search", "status": "400"}) or 0.0
    for types in (("application/json", f"multipart/form-data; boundary={BOUNDARY}"),
                  (f"multipart/form-data; boundary={BOUNDARY}", "application/json"),
                  ("application/json", "application/json")):
        response = http.post("/v1/search", content='{"product_id": "red-tee", "k": 2}',
                             headers=[("content-type", t) for t in types])
        assert error_code(response, 400) == "bad_request", types
        assert "more than one Content-Type header" in response.json()["error"]["message"]
        assert response.headers["connection"] == "close"
    assert served.registry.get_sample_value(
        "lookalike_http_requests_total", {"endpoint": "/v1/search", "status": "400"}) == \
        before + 3


def test_a_form_cut_before_its_closing_boundary_is_refused(http: TestClient) -> None:
    """Its fields after the cut were dropped: cut after the ``max_price`` part's header, the
    search was unfiltered (200, 10 hits); cut inside a second view, view 1 alone was searched;
    cut inside the only image, it said "upload at least one file"."""
    whole = form_body(png(RED), png((0, 0, 200)), max_price=b"25", k=b"5")
    header_end = whole.index(b'name="max_price"\r\n\r\n') + len(b'name="max_price"\r\n\r\n')
    second_view = whole.index(png((0, 0, 200))) + 20
    only = form_body(png(RED))
    cuts = {"after a field's header": whole[:header_end],
            "inside the second view": whole[:second_view],
            "inside the only image": only[:only.index(png(RED)) + 20],
            "after the last part": only[:only.rindex(b"--" + BOUNDARY.encode())],
            "inside the closing boundary": only[:-3],
            "empty": b""}
    for where, body in cuts.items():
        for path in ("/v1/search", "/v1/compare-prices"):
            response = post_form(http, body, path)
            assert error_code(response, 400) == "bad_upload", (where, path)
            assert "closing boundary" in response.json()["error"]["message"], where
    filtered = post_form(http, whole)
    assert [h["product_id"] for h in filtered.json()["hits"]] == [
        "red-tee", "red-tee-resale", "far"]


def test_whole_forms_pass_however_their_clients_end_them(http: TestClient) -> None:
    """httpx and requests end with ``--BOUNDARY--\\r\\n``, a browser's FormData too; RFC 2046
    allows nothing after it, or an epilogue."""
    for end in (b"--\r\n", b"--", b"--\r\nan epilogue, ignored\r\n"):
        for path in ("/v1/search", "/v1/compare-prices"):
            response = post_form(http, form_body(png(RED), k=b"3", end=end), path)
            assert response.status_code == 200, (end, path, response.text)
    assert upload(http, png(RED), k="3").status_code == 200  # httpx's own


def test_text_fields_that_are_not_utf8_are_refused(http: TestClient) -> None:
    """``\\xff\\xfe`` in a ``category`` field was read as Latin-1 "ÿþ" (200, no hits), and
    ``%FF%FE`` in a query string as U+FFFD."""
    form = post_form(http, form_body(png(RED), category=b"\xff\xfe"))
    assert error_code(form, 422) == "invalid_filter"
    assert form.json()["error"]["message"] == "category: not valid UTF-8 text"
    other = post_form(http, form_body(png(RED), k=b"3\xff"), "/v1/compare-prices")
    assert error_code(other, 422) == "invalid_request"
    assert "k: not valid UTF-8" in other.json()["error"]["message"]
    accented = post_form(http, form_body(png(RED), category="Hommes/Étés".encode()))
    assert accented.status_code == 200, accented.text  # UTF-8: text
    query = http.get("/v1/products/red-tee/similar?category=%FF%FE")
    assert error_code(query, 422) == "invalid_filter"
    assert query.json()["error"]["message"] == "category: not valid UTF-8 text"
    assert error_code(http.get("/v1/products/red-tee/similar?currency=US%C3"),
                      422) == "invalid_filter"
    assert error_code(http.get("/v1/images?ref=%FFa.png"), 422) == "invalid_request"
    sent_as_such = http.get("/v1/products/red-tee/similar?category=%EF%BF%BD")  # U+FFFD
    assert sent_as_such.status_code == 200, sent_as_such.text


def test_a_body_that_is_no_json_is_said_to_be_none(http: TestClient) -> None:
    """A JPEG, or ``x[[[[...``, was "nesting deeper than 16 levels": counted before anything
    said it was no JSON; a 5,000-digit ``k`` was "not JSON" (Python reads 4,300 digits)."""
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"[" * 40
    for body, content_type in ((jpeg, "application/json"), (jpeg, None),
                               (b"x" + b"[" * 40, "application/json"),
                               (b"  \r\n<[[[[[[[[[[[[[[[[[[[[", "application/json"),
                               (b"", "application/json")):
        headers = {"content-type": content_type} if content_type else {}
        response = http.post("/v1/search", content=body, headers=headers)
        assert error_code(response, 400) == "bad_json", body[:20]
        message = response.json()["error"]["message"]
        assert message.startswith("the body is not JSON") and "nesting" not in message
    deep = http.post("/v1/search", content=b"\xef\xbb\xbf \n" + b"[" * 40 + b"]" * 40,
                     headers={"content-type": "application/json"})  # a BOM, then JSON
    assert "nesting deeper than 16 levels" in deep.json()["error"]["message"]
    digits = "7" * 5000
    long_k = http.post("/v1/search", content=f'{{"product_id": "red-tee", "k": {digits}}}',
                       headers={"content-type": "application/json"})
    assert error_code(long_k, 422) == "invalid_request"
    assert "5000 digits" in long_k.json()["error"]["message"]
    negative = http.post("/v1/compare-prices",
                         content=f'{{"product_id": "red-tee", "max_price": -{digits}}}',
                         headers={"content-type": "application/json"})
    assert "5000 digits" in negative.json()["error"]["message"]


def test_a_bad_view_among_several_is_named(http: TestClient) -> None:
    """"empty image data" or "image file is truncated" named none of the views."""
    empty = upload(http, png(RED), b"", png(RED))
    assert error_code(empty, 422) == "not_an_image"
    assert empty.json()["error"]["message"] == "view 2 of 3: empty image data"
    cut = upload(http, png(RED), png(RED, 64)[:60])
    assert error_code(cut, 422) == "not_an_image"
    assert cut.json()["error"]["message"].startswith("view 2 of 2: ")
    alone = upload(http, b"")
    assert alone.json()["error"]["message"] == "empty image data"


# -- images: only files inside the roots -------------------------------------------------


def test_images_inside_the_roots_are_served(http: TestClient, served: Served) -> None:
    ref = str(served.image_root / "red-tee.png")
    response = http.get("/v1/images", params={"ref": ref})
    assert response.status_code == 200
    assert response.content == (served.image_root / "red-tee.png").read_bytes()
    assert response.headers["content-type"] == "image/png"


def test_nothing_else_on_disk_is_reachable(http: TestClient, served: Served,
                                           tmp_path: Path) -> None:
    root = served.image_root
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(RED))
    (root / "notes.txt").write_text("not an image")
    link = root / "escape.png"
    if not link.exists():
        link.symlink_to(secret)
    attempts = [
        str(secret),
        f"{root}/../{root.name}/../../{secret.relative_to(secret.anchor)}",
        str(root / ".." / ".." / "etc" / "passwd"),
        "/etc/passwd",
        str(link),                      # a symlink inside the root pointing out of it
        str(root / "notes.txt"),        # inside, but not an image
        f"file://{secret}",
        "../../../../etc/passwd",
        str(root / "red-tee.png") + "\x00.png",
    ]
    for ref in attempts:
        response = http.get("/v1/images", params={"ref": ref})
        assert response.status_code in (400, 404), ref
        assert response.content != secret.read_bytes()
    remote = http.get("/v1/images", params={"ref": "http://169.254.169.254/x.png"})
    assert error_code(remote, 400) == "not_local"  # never fetched on anyone's behalf


def test_a_nul_byte_or_an_empty_reference_is_the_same_404_as_any_refused_one(
        http: TestClient, served: Served) -> None:
    """The docs promise NUL bytes the same 404 as ``..``: it was a 400 ``bad_reference`` (a
    code the docs did not list) saying "an image reference is a non-empty path"."""
    refused = http.get("/v1/images", params={"ref": "/etc/passwd"})
    assert error_code(refused, 404) == "not_found"
    for ref in (str(served.image_root / "red-tee.png") + "\x00.png", "\x00", ""):
        response = http.get("/v1/images", params={"ref": ref})
        assert error_code(response, 404) == "not_found", ref
        assert response.json() == refused.json(), ref


def test_a_cached_image_is_revalidated_with_a_304(http: TestClient, served: Served) -> None:
    """The page's thumbnails were sent whole again (200) to a browser that had them."""
    params = {"ref": str(served.image_root / "red-tee.png")}
    first = http.get("/v1/images", params=params)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for asked in ({"If-None-Match": etag}, {"If-None-Match": f'"other", W/{etag}'},
                  {"If-None-Match": "*"}, {"If-Modified-Since": modified},
                  {"If-None-Match": etag, "Range": "bytes=0-3"}):
        again = http.get("/v1/images", params=params, headers=asked)
        assert again.status_code == 304, asked
        assert again.content == b"" and again.headers["etag"] == etag
        assert again.headers["cache-control"] == "max-age=3600"
    for asked in ({"If-None-Match": '"other"'}, {"If-Modified-Since": "yesterday"},
                  {"If-None-Match": '"other"', "If-Modified-Since": modified},
                  {"If-Modified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"}):
        changed = http.get("/v1/images", params=params, headers=asked)
        assert changed.status_code == 200, asked
        assert changed.content == first.content


def test_ranges_it_cannot_serve_are_json_errors(http: TestClient, served: Served) -> None:
    """Starlette answered them in plain text (400 "Malformed range header.", an empty 416)."""
    path = served.image_root / "red-tee.png"
    params, size = {"ref": str(path)}, path.stat().st_size
    for unreadable in ("garbage", "bytes=abc", "bytes=5-2", "bytes="):
        response = http.get("/v1/images", params=params, headers={"Range": unreadable})
        assert error_code(response, 400) == "bad_range", unreadable
        assert repr(unreadable) in response.json()["error"]["message"]
    past = http.get("/v1/images", params=params, headers={"Range": f"bytes={size}-"})
    assert error_code(past, 416) == "range_not_satisfiable"
    assert past.headers["content-range"] == f"bytes */{size}"
    assert past.json()["error"]["message"] == (f"the Range 'bytes={size}-' starts past the end "
                                               f"of this {size}-byte image")
    other_unit = http.get("/v1/images", params=params, headers={"Range": "items=0-1"})
    assert other_unit.status_code == 200 and other_unit.content == path.read_bytes()
    part = http.get("/v1/images", params=params, headers={"Range": "bytes=1-3"})
    assert part.status_code == 206 and part.content == path.read_bytes()[1:4]


# -- probes, metrics, OpenAPI, the page --------------------------------------------------


def test_probes(http: TestClient) -> None:
    assert http.get("/livez").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"milvus": "ok", "collection": "ok", "model": "ok"}
    assert http.head("/livez").status_code == 200  # was 405: checkers that send HEAD
    assert http.head("/readyz").status_code == 200
    assert "head" not in http.get("/openapi.json").json()["paths"]["/livez"]


def test_readyz_says_what_is_missing(tmp_path: Path) -> None:
    from serve.health import Readiness
    from store import MilvusStore

    store = MilvusStore.open(str(tmp_path / "empty.db"))
    checks = Readiness(store, "nothing_here", lambda: False, model_version="m").check()
    assert checks["milvus"] == "ok"
    assert "does not exist" in checks["collection"]
    assert checks["model"] == "warming up"
    store.close()


def stage_count(served: Served, stage: str) -> float:
    return served.registry.get_sample_value(
        "lookalike_search_stage_duration_seconds_count", {"stage": stage}) or 0.0


def test_metrics_count_requests_and_stages(http: TestClient) -> None:
    upload(http, png(RED), k="2")
    http.post("/v1/search", json={"vector": [1.0] * 3})
    http.post("/v1/compare-prices", json={"product_id": "red-tee"})
    text = http.get("/metrics").text
    assert 'lookalike_search_stage_duration_seconds_count{stage="verify"}' in text
    assert 'lookalike_http_requests_total{endpoint="/v1/search",status="200"}' in text
    assert 'lookalike_http_requests_total{endpoint="/v1/search",status="422"}' in text
    assert 'lookalike_search_stage_duration_seconds_count{stage="embed"}' in text
    assert 'lookalike_search_stage_duration_seconds_count{stage="milvus"}' in text
    assert "lookalike_http_requests_in_flight" in text
    assert 'lookalike_http_request_duration_seconds_bucket{endpoint="/v1/search"' in text


def test_only_a_comparison_that_verified_is_a_verify_stage(http: TestClient,
                                                          served: Served) -> None:
    """A comparison of an unknown product (404, before any verification) was observed as a
    ``verify`` stage of its whole time."""
    before = stage_count(served, "verify")
    assert error_code(http.post("/v1/compare-prices", json={"product_id": "nope"}),
                      404) == "unknown_product"
    assert stage_count(served, "verify") == before
    assert http.post("/v1/compare-prices", json={"product_id": "red-tee"}).status_code == 200
    assert stage_count(served, "verify") == before + 1


def test_an_image_search_s_stages_account_for_its_time(http: TestClient,
                                                      served: Served) -> None:
    """Decoding the upload, its features and the re-ranking were in no stage: most of an
    image search's time was missing from the stage histogram. ``photos`` holds the rest of
    an answered image search (a vector search has no such stage; a refused upload neither)."""
    def stage_sums() -> dict[str, float]:
        return {stage: served.registry.get_sample_value(
            "lookalike_search_stage_duration_seconds_sum", {"stage": stage}) or 0.0
            for stage in ("embed", "milvus", "photos")}

    def request_sum() -> float:
        return served.registry.get_sample_value(
            "lookalike_http_request_duration_seconds_sum", {"endpoint": "/v1/search"}) or 0.0

    photos = stage_count(served, "photos")
    http.post("/v1/search", json={"vector": [1.0] * 8})
    assert error_code(upload(http, b"not an image"), 422)
    assert stage_count(served, "photos") == photos
    stages, total = stage_sums(), request_sum()
    assert upload(http, png(RED, 300), k="2").status_code == 200
    assert stage_count(served, "photos") == photos + 1
    spent = {s: v - stages[s] for s, v in stage_sums().items()}
    took = request_sum() - total
    assert spent["photos"] > 0
    assert sum(spent.values()) <= took and sum(spent.values()) >= 0.5 * took, (spent, took)


def test_the_in_flight_gauge_leaves_out_the_scrape(http: TestClient) -> None:
    text = http.get("/metrics").text
    assert "lookalike_http_requests_in_flight 0.0" in text


def test_a_product_id_with_slashes_reaches_similar(tmp_path: Path) -> None:
    """An id with "/" (the event schema allows it) answered 404 ``unmatched`` both as
    ``a/b`` and as ``a%2Fb``. The route's metric label stays the template."""
    catalog = {"shop/red/tee": ("Men/Tops/Tees", 20.0, "USD", "s1", 0.99),
               "red-tee": ("Men/Tops/Tees", 12.0, "USD", "s2", 0.98),
               "far": ("Men/Tops", 1.0, "USD", "s1", 0.10)}
    for served in build_served(tmp_path, catalog=catalog):
        with TestClient(served.app) as client:
            for path in ("/v1/products/shop/red/tee/similar",
                         "/v1/products/shop%2Fred%2Ftee/similar"):
                answer = client.get(path, params={"k": 2})
                assert answer.status_code == 200, answer.text
                assert [h["product_id"] for h in answer.json()["hits"]] == ["red-tee", "far"]
            assert client.head("/v1/products/shop/red/tee/similar").status_code == 200
            back = client.get("/v1/products/red-tee/similar", params={"k": 1}).json()
            assert [h["product_id"] for h in back["hits"]] == ["shop/red/tee"]
            assert error_code(client.get("/v1/products/shop/red/tee/similarx"), 404) == \
                "not_found"
            assert error_code(client.get("/v1/products/shop/nope/similar"), 404) == \
                "unknown_product"
        counted = served.registry.get_sample_value(
            "lookalike_http_requests_total",
            {"endpoint": "/v1/products/{product_id}/similar", "status": "200"})
        assert counted == 4
        assert served.registry.get_sample_value(
            "lookalike_http_requests_total", {"endpoint": "unmatched", "status": "404"}) == 1


def test_a_body_refused_by_its_length_is_counted_under_its_route(http: TestClient,
                                                                 served: Served) -> None:
    """Refused before routing, it was counted as ``endpoint="unmatched"``."""
    def refused(endpoint: str) -> float:
        labels = {"endpoint": endpoint, "status": "413"}
        return served.registry.get_sample_value("lookalike_http_requests_total", labels) or 0.0

    similar = "/v1/products/{product_id}/similar"
    before = {e: refused(e) for e in ("/v1/search", similar, "unmatched")}
    assert error_code(upload(http, os.urandom(300_000)), 413) == "upload_too_large"
    assert error_code(http.post("/v1/products/red-tee/similar", content=b"x" * 1_100_000),
                      413) == "upload_too_large"  # a GET route: a partial match, as routed
    assert error_code(http.post("/v1/nothing", content=b"x" * 1_100_000), 413) == \
        "upload_too_large"
    assert {e: refused(e) - n for e, n in before.items()} == {
        "/v1/search": 1, similar: 1, "unmatched": 1}


def test_openapi_lists_the_endpoints(http: TestClient) -> None:
    spec = http.get("/openapi.json").json()
    for path in ("/v1/search", "/v1/compare-prices", "/v1/products/{product_id}/similar",
                 "/livez", "/readyz"):
        assert path in spec["paths"]
    content = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)


def test_get_routes_answer_head(http: TestClient, served: Served) -> None:
    """``/``, ``/metrics`` and ``/v1/images`` answered HEAD with a 405."""
    image = str(served.image_root / "red-tee.png")
    for path in ("/", "/metrics", f"/v1/images?ref={image}", "/static/app.js",
                 "/v1/products/red-tee/similar", "/docs"):
        head, get = http.head(path), http.get(path)
        assert head.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers[
            "content-type"], path
    assert "head" not in http.get("/openapi.json").json()["paths"]["/v1/images"]


def test_docs_and_openapi_are_counted_under_their_routes(http: TestClient,
                                                         served: Served) -> None:
    """They were counted as ``endpoint="unmatched"``."""
    def count(endpoint: str) -> float:
        labels = {"endpoint": endpoint, "status": "200"}
        return served.registry.get_sample_value("lookalike_http_requests_total", labels) or 0.0

    before = {e: count(e) for e in ("/docs", "/openapi.json", "/static", "unmatched")}
    for path in ("/docs", "/openapi.json", "/static/app.js"):
        assert http.get(path).status_code == 200
    assert {e: count(e) - n for e, n in before.items()} == {
        "/docs": 1, "/openapi.json": 1, "/static": 1, "unmatched": 0}


def test_the_page_and_the_api_send_security_headers(http: TestClient, served: Served) -> None:
    """``/`` and ``/static/*`` sent no CSP, no framing rule, no Referrer-Policy, no nosniff."""
    image = str(served.image_root / "red-tee.png")
    for path in ("/", "/static/app.js", "/static/style.css", "/livez", "/nothing",
                 f"/v1/images?ref={image}"):
        headers = http.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-frame-options"] == "DENY", path
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy, path
        assert "img-src 'self' https: http: blob:" in policy, path
    docs = http.get("/docs")  # Swagger UI comes from a CDN: no page policy there
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"
    assert len(http.get("/v1/images", params={"ref": image}).headers.get_list(
        "x-content-type-options")) == 1


def test_the_page_and_its_assets(http: TestClient) -> None:
    page = http.get("/")
    assert page.status_code == 200 and 'id="results"' in page.text
    # a photo searches for the item by default, as the API does (README: "the default of the
    # image and vector searches"); it defaulted to "similar look"
    select = re.search(r'<select id="match"[^>]*>(.*?)</select>', page.text, re.S)
    assert select is not None
    options = re.findall(r'<option value="(\w+)"( selected)?', select.group(1))
    assert sorted(v for v, _ in options) == ["exact", "similar"]
    assert next((v for v, chosen in options if chosen), options[0][0]) == "exact"
    assert http.get("/static/app.js").status_code == 200
    assert http.get("/static/../api.py").status_code == 404


# -- a failing backend and a slow model --------------------------------------------------


class SlowSearch:
    """Blocks ``by_vector`` until released; ``by_product`` fails like a lost Milvus."""

    query_decode_sizes = (None,)

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def by_vector(self, *args: Any, **kwargs: Any) -> list[Hit]:
        self.entered.set()
        self.release.wait(10)
        return []

    def by_product(self, *args: Any, **kwargs: Any) -> list[Hit]:
        raise ConnectionError("milvus went away")


def test_a_slow_search_does_not_block_and_a_lost_backend_is_a_503(tmp_path: Path) -> None:
    slow = SlowSearch()
    result: dict[str, Any] = {}

    def post(http: TestClient) -> None:
        result["r"] = http.post("/v1/search", json={"vector": [1.0] * 8})

    for served in build_served(tmp_path, search=slow):
        with TestClient(served.app) as http:
            worker = threading.Thread(target=post, args=(http,))
            worker.start()
            assert slow.entered.wait(5)
            started = time.monotonic()
            assert http.get("/livez").status_code == 200  # the loop is free meanwhile
            assert time.monotonic() - started < 2
            slow.release.set()
            worker.join(5)
            assert result["r"].status_code == 200
            lost = http.post("/v1/search", json={"product_id": "red-tee"})
            assert error_code(lost, 503) == "search_unavailable"
            assert "milvus went away" not in lost.text
            metrics = http.get("/metrics").text
            assert 'endpoint="/v1/search",status="503"' in metrics
            assert json.loads(lost.text)["error"]["code"] == "search_unavailable"
