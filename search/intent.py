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
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

from embedding.colour import COLOUR_DIM

Match: TypeAlias = Literal["exact", "similar"]
MATCHES: tuple[Match, ...] = ("exact", "similar")
SIMILAR_COLOUR_WEIGHT = 0.0
"""Colour weight of a ``similar`` query (the stored vectors keep theirs)."""


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

    def vector(self, vector: NDArray[np.float32], match: Match) -> NDArray[np.float32]:
        """The unit query vector to search with."""
        if match == "exact" or not self.colour_dim:
            return vector
        cnn = self._dim - self.colour_dim
        out = vector.astype(np.float32, copy=True)
        cnn_norm = float(np.linalg.norm(out[:cnn]))
        if cnn_norm == 0.0:
            raise ValueError("the vector's CNN part is zero: nothing to search for as 'similar'")
        out[:cnn] /= cnn_norm
        out[cnn:] = SIMILAR_COLOUR_WEIGHT * _unit(out[cnn:])
        result: NDArray[np.float32] = out / np.float32(np.linalg.norm(out))
        return result

    def score(self, cosine: float, match: Match) -> float:
        """The engine's cosine as the intent's score: ``cos_cnn`` for ``similar``."""
        if match == "exact" or not self.colour_dim or SIMILAR_COLOUR_WEIGHT:
            return cosine
        return cosine * self._stored_norm


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = float(np.linalg.norm(x))
    out: NDArray[np.float32] = (x / norm).astype(np.float32) if norm > 0 else x
    return out
