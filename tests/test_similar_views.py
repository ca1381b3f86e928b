"""A ``similar`` photo query is embedded in several channel orders and searches with their
mean (search/intent.py, ``SimilarViews``): the CNN's colour cue counts less, so the query's
style in another colour outranks another style in the query's colour. ``exact`` is untouched."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from embedding.colour import COLOUR_DIM
from embedding.embedder import mix_colour
from evaluation.protocol import load_gallery, load_queries
from evaluation.run import EmbedStats, embed_files, embed_scene_queries, evaluate
from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from lookalike.settings import SearchSettings
from schema.collection import CollectionSpec
from search.api import ProductSearch
from search.intent import (
    CHANNEL_ORDERS,
    SIMILAR_MAX_SIDE,
    SIMILAR_VIEWS,
    SimilarViews,
    channel_orders,
    similar_embedder,
)
from search.scene import scene_queries
from store import MilvusStore, ensure_collections
from tests import milvus_support
from tests.fakes import printed_pack, reshot_on_backdrop
from tests.milvus_support import Milvus, record

milvus = milvus_support.milvus
CNN = 4
WEIGHT = 0.5
RED, BLUE = (220, 20, 20), (20, 20, 220)


@dataclass
class LeakyEmbedder:
    """A stand-in for an ImageNet CNN whose features carry the colour: the CNN part is the
    picture's mean red, green and blue and its style (wide: +0.2, tall: -0.2); the colour
    block is the mean colour too. Records the pictures it was given."""

    model_version: str = "fake-leaky-v1"
    dim: int = CNN + COLOUR_DIM
    colour_weight: float = WEIGHT
    seen: list[Image.Image] = field(default_factory=list)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.seen.extend(images)
        cnn, colour = [], []
        for image in images:
            mean = np.asarray(image.convert("RGB"), np.float32).reshape(-1, 3).mean(axis=0) / 255
            cnn.append([*mean, 0.2 if image.width > image.height else -0.2])
            block = np.zeros(COLOUR_DIM, np.float32)
            block[int(np.argmax(mean))] = 1.0
            colour.append(block)
        return mix_colour(np.asarray(cnn, np.float32), np.asarray(colour, np.float32), WEIGHT)


def _garment(style: str, colour: tuple[int, int, int]) -> Image.Image:
    """A catalog photo: the garment (a plain rectangle) on white."""
    size = (32, 16) if style == "wide" else (16, 32)
    picture = Image.new("RGB", size, "white")
    picture.paste(colour, (2, 2, size[0] - 2, size[1] - 2))
    return picture


@pytest.fixture(scope="module")
def gallery(milvus: Milvus) -> Iterator[tuple[Milvus, CollectionSpec]]:
    """The wide style in blue (the query's style, another colour) and the tall style in red
    (another style, the query's colour)."""
    spec: CollectionSpec = milvus.new_spec(dim=CNN + COLOUR_DIM, prefix="simviews")
    ensure_collections(milvus.store, spec)
    embedder = LeakyEmbedder()
    rows = [record(pid, "k0", embedder.embed([picture])[0].tolist(),
                   model_version=embedder.model_version)
            for pid, picture in (("wide-blue", _garment("wide", BLUE)),
                                 ("tall-red", _garment("tall", RED)))]
    MilvusSink(milvus.store, spec).apply(WritePlan(upserts=rows))
    yield milvus, spec
    milvus.drop(spec)


def _search(gallery: tuple[Milvus, CollectionSpec], views: int,
            embedder: LeakyEmbedder | None = None) -> ProductSearch:
    milvus, spec = gallery
    return ProductSearch(milvus.store, spec, embedder or LeakyEmbedder(), consistency="Strong",
                         max_pixels=milvus_support.MAX_PIXELS, similar_views=views)


def test_similar_photo_query_finds_its_style_in_another_colour(
        gallery: tuple[Milvus, CollectionSpec]) -> None:
    query = _garment("wide", RED)
    # the photo alone: its colour, leaked into the CNN part, wins over the style
    alone = _search(gallery, 1).by_image(query, k=2, match="similar")
    assert [h.product_id for h in alone] == ["tall-red", "wide-blue"]
    # in three channel orders the colour averages out and the style decides
    embedder = LeakyEmbedder()
    views = _search(gallery, 3, embedder).by_image(query, k=2, match="similar")
    assert [h.product_id for h in views] == ["wide-blue", "tall-red"]
    assert len(embedder.seen) == 3  # the photo on white: no scene pictures, three orders
    assert [p.getpixel((8, 8)) for p in embedder.seen] == [RED, (20, 20, 220), (20, 220, 20)]


def test_exact_and_stored_vector_searches_are_untouched(
        gallery: tuple[Milvus, CollectionSpec]) -> None:
    query = _garment("wide", RED)
    embedder = LeakyEmbedder()
    search = _search(gallery, 3, embedder)
    exact = search.by_image(query, k=2)
    assert [h.product_id for h in exact] == ["tall-red", "wide-blue"]
    assert len(embedder.seen) == 1  # one pass, as before
    reference = _search(gallery, 1).by_image(query, k=2)
    assert [h.score for h in exact] == [h.score for h in reference]
    vector = LeakyEmbedder().embed([query])[0]
    assert [h.product_id for h in search.by_vector(vector, k=2, match="similar")] == [
        "tall-red", "wide-blue"]  # a given vector is searched as given
    assert [h.product_id for h in search.by_product("wide-blue", k=1)] == ["tall-red"]


def test_query_vectors_of_a_similar_search_are_the_mean_of_the_orders(
        gallery: tuple[Milvus, CollectionSpec]) -> None:
    search = _search(gallery, 3)
    query = _garment("wide", RED)
    [vector] = search.query_vectors([query], match="similar")
    orders = LeakyEmbedder().embed(channel_orders(query, 3))
    expected = orders.sum(axis=0) / np.linalg.norm(orders.sum(axis=0))
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    [plain] = search.query_vectors([query])
    np.testing.assert_allclose(plain, LeakyEmbedder().embed([query])[0], atol=1e-6)


def test_channel_orders() -> None:
    picture = Image.new("RGB", (2, 2), (1, 2, 3))
    assert [p.getpixel((0, 0)) for p in channel_orders(picture, 6)] == [
        (1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 3, 2), (3, 2, 1), (2, 1, 3)]
    assert channel_orders(picture, 1)[0].getpixel((0, 0)) == (1, 2, 3)
    assert channel_orders(Image.new("L", (2, 2), 7), 3)[2].getpixel((1, 1)) == (7, 7, 7)
    assert len(CHANNEL_ORDERS) == 6
    for views in (0, 7):
        with pytest.raises(ValueError, match="views must be 1 to 6"):
            channel_orders(picture, views)
        with pytest.raises(ValueError, match="views must be 1 to 6"):
            similar_embedder(LeakyEmbedder(), views)


def test_similar_embedder() -> None:
    leaky = LeakyEmbedder()
    assert similar_embedder(leaky, 1) is leaky
    colourless = LeakyEmbedder(colour_weight=0.0)
    assert similar_embedder(colourless, 3) is colourless  # one intent without a colour block
    views = similar_embedder(leaky, 3)
    assert isinstance(views, SimilarViews)
    assert views.model_version == "fake-leaky-v1+similar-rgb.gbr.brg@1280"  # not the photo's
    assert views.dim == leaky.dim and views.colour_weight == WEIGHT
    assert views.embed([]).shape == (0, leaky.dim)
    out = views.embed([_garment("wide", RED), _garment("tall", BLUE)])
    assert out.shape == (2, leaky.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    SearchSettings(similar_views=len(CHANNEL_ORDERS))  # the settings bound it to the orders
    with pytest.raises(ValidationError, match="less than or equal to 6"):
        SearchSettings(similar_views=len(CHANNEL_ORDERS) + 1)


def test_the_version_names_what_is_done_to_a_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectors cached under the version (``lookalike eval``) are never taken once the orders
    or the shrink mean something else."""
    import search.intent as intent

    views = similar_embedder(LeakyEmbedder(), 3)
    before = views.model_version
    monkeypatch.setattr(intent, "CHANNEL_ORDERS", ((0, 1, 2), (0, 2, 1), (2, 1, 0)))
    assert views.model_version == "fake-leaky-v1+similar-rgb.rbg.bgr@1280" != before
    monkeypatch.undo()
    monkeypatch.setattr(intent, "SIMILAR_MAX_SIDE", 640)
    assert views.model_version == "fake-leaky-v1+similar-rgb.gbr.brg@640"


def test_eval_embeds_a_similar_query_as_the_search_does_even_when_the_gallery_holds_its_photo(
        tmp_path: Path) -> None:
    """``lookalike eval`` counts each photo's content once per run: a ``similar`` query whose
    bytes a gallery photo also has took the gallery's vector (one channel order), not the
    mean of three that ``by_images`` searches with. Seen photos are keyed by model version."""
    photo = tmp_path / "red-wide.png"
    Image.new("RGB", (32, 16), RED).save(photo)
    plain = LeakyEmbedder()
    stats = EmbedStats()
    gallery = embed_files([photo], plain, None, max_pixels=10**6, stats=stats)
    views = similar_embedder(plain, SIMILAR_VIEWS)
    query = embed_files([photo], views, None, max_pixels=10**6, stats=stats)
    expected = views.embed([Image.open(photo)])
    assert np.allclose(query, expected, atol=1e-6)
    assert not np.allclose(query, gallery, atol=1e-3)
    assert stats.repeated == 0 and stats.embedded == 2
    again = embed_files([photo], views, None, max_pixels=10**6, stats=stats)
    assert np.array_equal(again, query) and stats.repeated == 1  # same version: seen once


def test_a_large_similar_picture_is_shrunk_before_its_channel_orders_are_made() -> None:
    """Three full-size copies of a 24 MP upload held 350 MB more; the model sees 224 px."""
    leaky = LeakyEmbedder()
    views = SimilarViews(leaky, 3)
    vectors = views.embed([Image.new("RGB", (4000, 300), RED)] * 5)
    assert vectors.shape == (5, CNN + COLOUR_DIM)
    assert len(leaky.seen) == 15
    assert all(max(picture.size) == SIMILAR_MAX_SIDE for picture in leaky.seen)
    assert np.allclose(vectors, vectors[0], atol=1e-6)  # in chunks, each the same


def _scene() -> Image.Image:
    return reshot_on_backdrop(printed_pack("CRUNCHY"), texture_seed=2)


def test_a_similar_scene_upload_embeds_only_its_photos_in_channel_orders(
        gallery: tuple[Milvus, CollectionSpec]) -> None:
    """16 scene photos searched ``similar``: each photo in three orders, the pictures made
    from it (light, cut-outs, windows) in one: 2 * 16 passes more than ``exact``, not
    2 * 224 (their orders did not pay: docs/matching.md, "Channel orders on scene
    pictures")."""
    shot = _scene()
    parts = scene_queries(shot)
    pictures = 1 + len(parts.pictures)
    assert parts.lit is not None and parts.cutouts and parts.windows  # a scene
    exact = LeakyEmbedder()
    _search(gallery, 3, exact).query_vectors([shot] * 16)
    assert len(exact.seen) == 16 * pictures  # one pass each, as before
    leaky = LeakyEmbedder()
    vectors = _search(gallery, 3, leaky).query_vectors([shot] * 16, match="similar")
    assert len(vectors) == 16 * pictures
    assert len(leaky.seen) - 16 * pictures == 2 * 16  # each photo itself, two more orders
    one = LeakyEmbedder()
    [photo, *rest] = _search(gallery, 3, one).query_vectors([shot], match="similar")
    assert len(one.seen) == pictures + 2
    orders = LeakyEmbedder().embed(channel_orders(shot, 3)).sum(axis=0)
    np.testing.assert_allclose(photo, orders / np.linalg.norm(orders), atol=1e-6)
    np.testing.assert_allclose(rest, LeakyEmbedder().embed(parts.pictures), atol=1e-6)


def test_a_similar_upload_of_photos_on_white_keeps_three_orders_each(
        gallery: tuple[Milvus, CollectionSpec]) -> None:
    leaky = LeakyEmbedder()
    vectors = _search(gallery, 3, leaky).query_vectors([_garment("wide", RED)] * 16,
                                                       match="similar")
    assert len(vectors) == 16 and len(leaky.seen) == 48


def test_eval_embeds_a_similar_scene_as_the_search_does(
        gallery: tuple[Milvus, CollectionSpec], tmp_path: Path) -> None:
    """``lookalike eval`` asks the search which embedder embeds each scene picture
    (``picture_embedders``): its vectors are the ones ``query_vectors`` searches with."""
    path = tmp_path / "shot.png"
    _scene().save(path)
    leaky = LeakyEmbedder()
    search = _search(gallery, 3, leaky)
    extra = embed_scene_queries(
        [path], search.query_embedder("similar"), None, max_pixels=10**7, stats=EmbedStats(),
        embedders=lambda i, parts: search.picture_embedders(parts, "similar"))
    expected = search.query_vectors([path], match="similar")
    assert np.asarray(expected) == pytest.approx(extra[0], abs=1e-6)
    plain = embed_scene_queries([path], leaky, None, max_pixels=10**7, stats=EmbedStats())
    assert np.asarray(search.query_vectors([path])) == pytest.approx(plain[0], abs=1e-6)
    assert not np.allclose(extra[0][0], plain[0][0], atol=1e-3)  # the photo: three orders
    assert np.allclose(extra[0][-1], plain[0][-1], atol=1e-6)  # a window: one


def test_eval_searches_a_similar_scene_query_with_the_vectors_the_search_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through ``evaluate``: the vectors a ``similar`` scene query is searched
    with are those of ``query_vectors`` (the photo in three orders, its pictures in one)."""
    import json

    (tmp_path / "g").mkdir()
    _garment("wide", RED).save(tmp_path / "g" / "red.png")
    _scene().save(tmp_path / "shot.png")
    (tmp_path / "gallery.jsonl").write_text(json.dumps(
        {"product_id": "red", "category": "A", "images": ["g/red.png"]}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps(
        {"image": "shot.png", "relevant": ["red"]}) + "\n")
    searched: list[tuple[ProductSearch, list[list[float]]]] = []
    by_vectors = ProductSearch.by_vectors

    def spy(self: ProductSearch, vectors: Sequence[Sequence[float]], *args: object,
            **kwargs: object) -> object:
        searched.append((self, [list(map(float, v)) for v in vectors]))
        return by_vectors(self, vectors, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ProductSearch, "by_vectors", spy)
    products = load_gallery(tmp_path / "gallery.jsonl")
    store = MilvusStore.open(str(tmp_path / "eval.db"))
    try:
        evaluate(products, load_queries(tmp_path / "queries.jsonl", products), LeakyEmbedder(),
                 store, CollectionSpec(name="similar", dim=CNN + COLOUR_DIM), None,
                 max_pixels=10**7, match="similar")
        [(search, vectors)] = searched
        expected = search.query_vectors([tmp_path / "shot.png"], match="similar")
    finally:
        store.close()
    assert len(vectors) == len(expected) > 1  # a scene: the photo and its pictures
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
