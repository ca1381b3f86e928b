"""The two search intents: ``exact`` ranks this colour first, ``similar`` ranks by the CNN part
alone, from the same stored vectors (no re-indexing)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from embedding.colour import COLOUR_DIM
from embedding.embedder import mix_colour
from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from schema.collection import CollectionSpec
from search.api import ProductSearch
from search.intent import Match, QueryWeighting, check_match
from store import ensure_collections
from tests import milvus_support
from tests.milvus_support import Milvus, record

milvus = milvus_support.milvus
CNN = 16
WEIGHT = 0.5


def _vector(cnn: Sequence[float], colour: Sequence[float]) -> np.ndarray:
    c = np.asarray([cnn], np.float32)
    h = np.asarray([colour], np.float32)
    h = h / np.linalg.norm(h)
    out: np.ndarray = mix_colour(c, h, WEIGHT)[0]
    return out


def _cnn(cos: float, towards: int) -> list[float]:
    """A unit CNN part with cosine ``cos`` to axis 0."""
    v = [0.0] * CNN
    v[0], v[towards] = cos, math.sqrt(1 - cos * cos)
    return v


def _colour(index: int) -> list[float]:
    v = [0.0] * COLOUR_DIM
    v[index] = 1.0
    return v


QUERY = _vector(_cnn(1.0, 1), _colour(0))
# same style, another colour: the CNN part is close, the colour block orthogonal
OTHER_COLOUR = _vector(_cnn(0.9, 1), _colour(5))
# another style in the query's colour
SAME_COLOUR = _vector(_cnn(0.7, 2), _colour(0))


@dataclass
class ColourEmbedder:
    """Has a colour block like the default model; embeds nothing (vectors are given)."""

    model_version: str = "fake-colour-v1"
    dim: int = CNN + COLOUR_DIM
    colour_weight: float = WEIGHT

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([QUERY for _ in images])


@pytest.fixture(scope="module")
def search(milvus: Milvus) -> Iterator[ProductSearch]:
    spec: CollectionSpec = milvus.new_spec(dim=CNN + COLOUR_DIM, prefix="intent")
    ensure_collections(milvus.store, spec)
    embedder = ColourEmbedder()
    rows = [record(pid, "k0", v.tolist(), model_version=embedder.model_version)
            for pid, v in (("other-colour", OTHER_COLOUR), ("same-colour", SAME_COLOUR),
                           ("query-item", QUERY))]
    MilvusSink(milvus.store, spec).apply(WritePlan(upserts=rows))
    yield ProductSearch(milvus.store, spec, embedder, consistency="Strong",
                        max_pixels=milvus_support.MAX_PIXELS)
    milvus.drop(spec)


def test_exact_ranks_the_colour_first_similar_the_style(search: ProductSearch) -> None:
    exact = search.by_vector(QUERY, k=3)
    assert [h.product_id for h in exact] == ["query-item", "same-colour", "other-colour"]
    similar = search.by_vector(QUERY, k=3, match="similar")
    assert [h.product_id for h in similar] == ["query-item", "other-colour", "same-colour"]
    # a similar score is the CNN parts' cosine
    assert [round(h.score, 4) for h in similar] == [1.0, 0.9, 0.7]
    # an exact score is the stored vectors' cosine: (cos_cnn + w^2 cos_colour) / (1 + w^2)
    assert exact[1].score == pytest.approx((0.7 + WEIGHT**2) / (1 + WEIGHT**2), abs=1e-4)


def test_by_product_defaults_to_similar_and_images_to_exact(search: ProductSearch) -> None:
    assert [h.product_id for h in search.by_product("query-item", k=2)] == [
        "other-colour", "same-colour"]
    assert [h.product_id for h in search.by_product("query-item", k=2, match="exact")] == [
        "same-colour", "other-colour"]
    picture = Image.new("RGB", (8, 8))
    assert search.by_image(picture, k=2)[1].product_id == "same-colour"
    assert search.by_images([picture], k=2, match="similar")[1].product_id == "other-colour"


def test_unknown_intent_is_refused(search: ProductSearch) -> None:
    with pytest.raises(ValueError, match="match must be one of exact, similar"):
        search.by_vector(QUERY, match="colour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="match must be"):
        check_match("Exact")


@pytest.mark.parametrize("scale", [1e38, 1e20, 1e-20, 1e-30])
@pytest.mark.parametrize("match", ["exact", "similar"])
def test_both_intents_are_scale_invariant(search: ProductSearch, scale: float,
                                          match: Match) -> None:
    """The CNN part's norm was taken in float32: 1e38 times a query overflowed to infinity
    and every ``similar`` score was NaN (``null`` over HTTP); tiny ones underflowed."""
    expected = search.by_vector(QUERY, 3, None, match)
    got = search.by_vector(QUERY * scale, 3, None, match)
    assert [h.product_id for h in got] == [h.product_id for h in expected]
    assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-6)
    flat = search.by_vector([1e38] * (CNN + COLOUR_DIM), 3, None, match)
    assert all(math.isfinite(h.score) and -1.0 <= h.score <= 1.0 for h in flat)


def test_a_vector_without_a_cnn_part_has_nothing_to_search_as_similar(
        search: ProductSearch) -> None:
    colour_only = np.concatenate([np.zeros(CNN), np.ones(COLOUR_DIM)])
    assert search.by_vector(colour_only, k=1)  # exact: the colour is a direction
    with pytest.raises(ValueError, match="CNN part is the zero vector"):
        search.by_vector(colour_only, k=1, match="similar")


def test_scores_stay_within_one() -> None:
    weighting = QueryWeighting(CNN + COLOUR_DIM, WEIGHT)
    assert weighting.score(1.0000003, "exact") == 1.0
    assert weighting.score(0.9999999, "similar") == 1.0  # times sqrt(1 + w^2)
    assert weighting.score(float("nan"), "similar") == -1.0


def test_weighting_is_the_identity_without_a_colour_block() -> None:
    weighting = QueryWeighting(dim=CNN, colour_weight=0.0)
    v = np.asarray(_cnn(0.6, 3), np.float32)
    assert weighting.vector(v, "similar") is v
    assert weighting.score(0.42, "similar") == 0.42


def test_similar_query_ranks_stored_vectors_by_their_cnn_part() -> None:
    rng = np.random.default_rng(0)
    cnn = rng.normal(size=(50, CNN)).astype(np.float32)
    colour = np.abs(rng.normal(size=(50, COLOUR_DIM))).astype(np.float32)
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    stored = mix_colour(cnn, colour, WEIGHT)
    weighting = QueryWeighting(CNN + COLOUR_DIM, WEIGHT)
    query = weighting.vector(stored[0], "similar")
    cosines = stored @ query
    unit_cnn = cnn / np.linalg.norm(cnn, axis=1, keepdims=True)
    expected = unit_cnn @ unit_cnn[0]
    got = np.array([weighting.score(float(c), "similar") for c in cosines])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert float(np.linalg.norm(query)) == pytest.approx(1.0, abs=1e-6)
