"""Search intents: ``exact`` (this item, this colour) and ``similar`` (this kind, any colour).

Why two: the default vector is ``[cnn, w * colour]`` (both unit length, the whole renormalised;
:func:`embedding.embedder.mix_colour`). Colour is the right cue for "this exact variant"
(luma-views R@1 0.32 -> 0.62 with it) and the wrong one for "this style in any colour": on
the luma-colours protocol (the other colours of the query's style) it costs R@1 0.68 -> 0.48.

Both come from the stored vectors, without re-indexing: the query's colour block is zeroed
for ``similar``. A stored row is ``[c, w h] / sqrt(1 + w^2)``, so its cosine with the query
``[c_q, 0]`` is ``cos_cnn / sqrt(1 + w^2)``: the ranking is the CNN part's alone, and
multiplying by ``sqrt(1 + w^2)`` gives back ``cos_cnn`` as the score. Weights between 0 and
0.3 were measured for ``similar`` (docs/matching.md); 0 was best on every protocol.

A model without a colour block (``colour_weight`` 0) has one intent: both give the same result.

Colour also leaks into the CNN part (an ImageNet network is not colour-blind): other products of
the query's colour still compete with its style in another colour. So a ``similar`` *photo*
query is embedded in ``views`` channel orders (RGB, GBR, BRG: the same shapes and shading in
other hues; :data:`CHANNEL_ORDERS`) and searches with the mean of their vectors
(:class:`SimilarViews`): on the cross-colour protocols R@1 luma-colours 0.677 -> 0.738,
packs-colours 0.411 -> 0.489, plain-colours 0.283 -> 0.483, fmnist-colours 0.808 -> 0.962
(docs/matching.md, "Channel orders"). Two more network passes per photo; the pictures a
scene photo also searches with (:mod:`search.scene`: under catalog light, cut-outs, windows)
stay in one order, where their orders gained nothing on cross-colour snapshots and cost the
snapshots whose own colour is the answer (``ProductSearch.picture_embedders``;
docs/matching.md, "Channel orders on scene pictures"). The stored vectors are unchanged, and
``exact`` and ``by_product`` (stored vectors) are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.colour import COLOUR_DIM
from embedding.decode import shrink_to
from embedding.embedder import Embedder, l2_normalise
from lookalike.settings import SearchSettings

Match: TypeAlias = Literal["exact", "similar"]
MATCHES: tuple[Match, ...] = ("exact", "similar")
SIMILAR_COLOUR_WEIGHT = 0.0
"""Colour weight of a ``similar`` query (the stored vectors keep theirs)."""
CHANNEL_ORDERS: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2))
"""The photo's channel orders a ``similar`` query embeds it in: itself (RGB), the two cyclic
shifts (GBR, BRG: much as hue turns of 120 and 240 degrees), then the three swaps."""
SIMILAR_MAX_SIDE = 1280
"""A ``similar`` picture longer than this is shrunk to it before its channel orders are made
(as the scene pictures are made at ``search.scene.WORKING_SIDE``)."""
SIMILAR_CHUNK = 4
"""Pictures whose channel orders are made and embedded at once (12 pictures at 3 orders)."""
SIMILAR_VIEWS = SearchSettings().similar_views
"""Channel orders a ``similar`` photo query is embedded in, by default (``search.similar_views``,
defined there only): 3 gained R@1 on all four cross-colour protocols; 6 (and hue turns) no
more. Settings bound it to the 6 of :data:`CHANNEL_ORDERS` (``tests/test_similar_views.py``)."""


def check_match(match: str) -> Match:
    if match == "exact":
        return "exact"
    if match == "similar":
        return "similar"
    raise ValueError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")


class QueryWeighting:
    """Turns a full query vector into the vector searched for an intent, and the engine's
    cosine back into a score on the intent's own scale (see the module doc)."""

    def __init__(self, dim: int, colour_weight: float) -> None:
        self.colour_dim = COLOUR_DIM if colour_weight > 0 and dim > COLOUR_DIM else 0
        self._dim = dim
        self._colour_weight = colour_weight
        self._stored_norm = math.sqrt(1.0 + colour_weight**2)

    def vector(self, vector: NDArray[np.floating[Any]], match: Match) -> NDArray[np.float32]:
        """The unit query vector to search with (``vector``: a unit vector, as
        :func:`unit` makes one). For ``similar``, each part the intent weights is
        normalised on its own, in float64 (:func:`unit`); a part that cannot be (all zeros)
        is refused with ValueError."""
        if match == "exact" or not self.colour_dim:
            return vector.astype(np.float32, copy=False)
        cnn = self._dim - self.colour_dim
        whole = np.asarray(vector, np.float64).reshape(-1)
        out = np.empty_like(whole)
        out[:cnn] = unit(whole[:cnn], "the vector's CNN part",
                         "nothing to search for as 'similar'")
        out[cnn:] = (SIMILAR_COLOUR_WEIGHT * unit(whole[cnn:], "the vector's colour part")
                     if SIMILAR_COLOUR_WEIGHT else 0.0)
        return unit(out).astype(np.float32)

    def score(self, cosine: float, match: Match) -> float:
        """The engine's cosine as the intent's score: ``cos_cnn`` for ``similar``; within
        [-1, 1] (float32 rounding can put a cosine a hair past 1)."""
        if match == "exact" or not self.colour_dim or SIMILAR_COLOUR_WEIGHT:
            return _within_one(cosine)
        return _within_one(cosine * self._stored_norm)


def channel_orders(image: Image.Image, views: int) -> list[Image.Image]:
    """``image`` (as RGB) in the first ``views`` of :data:`CHANNEL_ORDERS`, itself first."""
    if not 1 <= views <= len(CHANNEL_ORDERS):
        raise ValueError(f"views must be 1 to {len(CHANNEL_ORDERS)}, got {views}")
    rgb = image.convert("RGB")
    if views == 1:
        return [rgb]
    pixels = np.asarray(rgb)
    return [rgb, *(Image.fromarray(np.ascontiguousarray(pixels[:, :, list(order)]), "RGB")
                   for order in CHANNEL_ORDERS[1:views])]


class SimilarViews:
    """An :class:`~embedding.embedder.Embedder` for ``similar`` photo queries: each image is
    embedded in ``views`` channel orders (:func:`channel_orders`, one call of ``embedder``
    for all) and its vector is their mean, of unit length. The colour block of that mean is
    zeroed by the ``similar`` weighting anyway; what it changes is the CNN part, whose
    colour cue it averages out. ``model_version`` names the views, so cached vectors of the
    photo itself are never taken for it (``lookalike eval``)."""

    def __init__(self, embedder: Embedder, views: int) -> None:
        self._embedder = embedder
        self._views = views

    @property
    def model_version(self) -> str:
        """The model's version and what is done to a picture before it: its channel orders
        by name and the shrink (``...+similar-rgb.gbr.brg@1280``), so that redefining
        either never takes vectors cached under the old meaning (``lookalike eval``)."""
        orders = ".".join("".join("rgb"[c] for c in order)
                          for order in CHANNEL_ORDERS[:self._views])
        return f"{self._embedder.model_version}+similar-{orders}@{SIMILAR_MAX_SIDE}"

    @property
    def dim(self) -> int:
        return self._embedder.dim

    @property
    def colour_weight(self) -> float:
        return float(getattr(self._embedder, "colour_weight", 0))

    @property
    def decode_size(self) -> int | None:
        size: int | None = getattr(self._embedder, "decode_size", None)
        return size

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """One call of the wrapped embedder per :data:`SIMILAR_CHUNK` images; each image
        shrunk to :data:`SIMILAR_MAX_SIDE` first (a 24 MP PNG in three orders held 350 MB
        more, as decoded; the model sees 224 px)."""
        out = np.empty((len(images), self.dim), np.float32)
        for start in range(0, len(images), SIMILAR_CHUNK):
            chunk = images[start:start + SIMILAR_CHUNK]
            pictures = [view for image in chunk
                        for view in channel_orders(shrink_to(image, SIMILAR_MAX_SIDE),
                                                   self._views)]
            vectors = np.asarray(self._embedder.embed(pictures), np.float32)
            summed = vectors.reshape(len(chunk), self._views, -1).sum(axis=1)
            out[start:start + len(chunk)] = l2_normalise(summed.astype(np.float32))
        return out


def similar_embedder(embedder: Embedder, views: int) -> Embedder:
    """What embeds a ``similar`` photo query: ``embedder`` itself with one view or without a
    colour block (one intent, :class:`QueryWeighting`), else :class:`SimilarViews`."""
    if not 1 <= views <= len(CHANNEL_ORDERS):
        raise ValueError(f"similar views must be 1 to {len(CHANNEL_ORDERS)}, got {views}")
    if views == 1 or not float(getattr(embedder, "colour_weight", 0)) > 0:
        return embedder
    return SimilarViews(embedder, views)


def unit(values: Sequence[float] | NDArray[np.floating[Any]], what: str = "the vector",
         why: str = "it has no direction to search for") -> NDArray[np.float64]:
    """``values`` scaled to length 1 in float64, after dividing by its largest magnitude: a
    vector and 1e30 times it search alike. In float32 the norm of 1,472 entries of 1e20
    overflows to infinity (every cosine 0, or NaN once divided by it) and that of 1e-30s
    underflows to nothing (scores of 1e-29, or a hair over 1). ValueError for a NaN or
    infinite entry, and for the zero vector (``what`` names the vector or part, ``why``
    what its zero costs)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak == 0.0:
        raise ValueError(f"{what} is the zero vector: {why}")
    scaled = arr / peak
    norm = float(np.linalg.norm(scaled))  # between 1 and sqrt(len): finite and non-zero
    out: NDArray[np.float64] = scaled / norm
    return out


def _within_one(score: float) -> float:
    """A cosine clipped to [-1, 1]; NaN (only a stored row without a direction could give
    it: queries are :func:`unit`) as the least similar, never as JSON ``null``."""
    return min(1.0, max(-1.0, score)) if math.isfinite(score) else -1.0
