"""The embedding model shared by ingest and search (image -> L2-normalised vector).

Everything exported here is light to import; Keras is loaded only when an embedder is built.
"""

from embedding.decode import ImageDecodeError, decode_image, load_image
from embedding.embedder import (
    EfficientNetLiteEmbedder,
    Embedder,
    PreparedEmbedder,
    create_embedder,
    model_version,
)
from embedding.preprocess import SquareMode
from embedding.variants import FEATURE_DIM, Variant
from embedding.weights import WeightsError, WeightsNotInstalledError

__all__ = [
    "FEATURE_DIM",
    "EfficientNetLiteEmbedder",
    "Embedder",
    "ImageDecodeError",
    "PreparedEmbedder",
    "SquareMode",
    "Variant",
    "WeightsError",
    "WeightsNotInstalledError",
    "create_embedder",
    "decode_image",
    "load_image",
    "model_version",
]
