"""Decode the catalog's photos once, draw their views, and keep the frozen bottom's output.

Each photo is decoded (JPEG at reduced scale where possible), reduced to the work size, and
turned into its clean model input plus ``views`` altered ones (:mod:`training.augment`); the
bottom of the network (:mod:`training.backbone`) runs on all of them once and its feature maps
are kept as float16. Chunks are prepared on worker threads while the bottom runs on the last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from tqdm import tqdm

from embedding.colour import COLOUR_DIM, colour_descriptors
from embedding.decode import ImageDecodeError, load_image
from embedding.files import photo_over_limit
from training.augment import WORK_SIZE, AugmentConfig, views, work_image
from training.backbone import Backbone
from training.data import TrainImage

log = logging.getLogger(__name__)

CHUNK = 16
"""Photos prepared and run through the bottom per step."""
BACKGROUNDS = 8
"""Other photos a snapshot's shelf is cut from."""


@dataclass
class CachedViews:
    images: list[TrainImage]
    features: NDArray[np.float16]
    """(n_images, 1 + views, h, w, c): the bottom's output per photo and view (0 = clean)."""
    colour: NDArray[np.float32] | None
    """(n_images, 1 + views, colour dim), when asked for."""
    seconds: float = 0.0


def decode_all(images: Sequence[TrainImage], max_pixels: int, pool: ThreadPoolExecutor,
               max_bytes: int) -> tuple[list[TrainImage], list[Image.Image],
                                        list[tuple[TrainImage, str]]]:
    """Work-sized RGB photos; undecodable ones are listed with their reason, not raised. A
    file over ``max_bytes`` is one of them, refused before it is read (a 3 GB sparse file
    was read whole: 2.5 GB of memory), with the reason eval and search give."""
    def load(item: TrainImage) -> Image.Image | str:
        too_large = photo_over_limit(item.path, max_bytes)
        if too_large is not None:
            return too_large
        try:
            return work_image(load_image(item.path, max_pixels, min_size=WORK_SIZE,
                                         max_bytes=max_bytes))
        except ImageDecodeError as exc:
            return str(exc)

    kept: list[TrainImage] = []
    photos: list[Image.Image] = []
    skipped: list[tuple[TrainImage, str]] = []
    for item, result in zip(images, pool.map(load, images), strict=True):
        if isinstance(result, str):
            skipped.append((item, result))
        else:
            kept.append(item)
            photos.append(result)
    return kept, photos, skipped


def cache_views(images: Sequence[TrainImage], photos: Sequence[Image.Image],
                backbone: Backbone, config: AugmentConfig, seed: int, *,
                colour: bool, pool: ThreadPoolExecutor, desc: str) -> CachedViews:
    started = time.perf_counter()
    size, square = backbone.image_size, backbone.square

    def prepare(start: int) -> NDArray[np.uint8]:
        rng = np.random.default_rng([seed, start])
        chunk = []
        for i in range(start, min(start + CHUNK, len(photos))):
            picks = rng.choice(len(photos), size=min(BACKGROUNDS, len(photos)), replace=False)
            others = [photos[j] for j in picks if j != i]
            chunk.append(views(photos[i], others, (seed, i), config, size, square))
        return np.stack(chunk)

    starts = list(range(0, len(photos), CHUNK))
    features: NDArray[np.float16] | None = None
    colours = np.zeros((len(photos), 1 + config.views, COLOUR_DIM), np.float32) if colour else None
    pending = pool.submit(prepare, starts[0]) if starts else None
    with tqdm(total=len(photos) * (1 + config.views), desc=desc, unit="view") as bar:
        for n, start in enumerate(starts):
            assert pending is not None
            batch = pending.result()
            if n + 1 < len(starts):
                pending = pool.submit(prepare, starts[n + 1])
            flat = batch.reshape(-1, *batch.shape[2:])
            maps = backbone.features(flat)
            if features is None:
                features = np.empty((len(photos), 1 + config.views, *maps.shape[1:]),
                                    np.float16)
            features[start : start + len(batch)] = maps.reshape(*batch.shape[:2], *maps.shape[1:])
            if colours is not None:
                colours[start : start + len(batch)] = colour_descriptors(flat).reshape(
                    *batch.shape[:2], -1)
            bar.update(len(flat))
    if features is None:
        raise ValueError("no photos to cache")
    return CachedViews(list(images), features, colours, seconds=time.perf_counter() - started)
