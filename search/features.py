"""What same-item verification computes of one photo, and how two photos' keypoints match.

* :func:`photo_features`: SIFT keypoints and descriptors at ``VERIFY_SIZE``, the foreground
  colour histogram, the photo at half size and, for a photo with no telling border, its
  segmented product (:class:`PhotoFeatures`); :func:`mirrored` the same keypoints, mirrored.
* :func:`ransac`: mutual ratio-test matches and the RANSAC homography through them (its
  inliers are the geometric evidence), or one-way matches for a photo that shows its product
  several times (a shelf, a bin).
* :func:`coarse_homography` and :func:`refine_homography`: mappings found or sharpened on the
  grey levels (OpenCV's ECC), for plain products without keypoints and for a RANSAC mapping a
  pixel off.
* :func:`silhouette_agreement`: the outline and colour of two plain products compared.

What the two photos, once aligned, say about colour, print and light, and the rule that
decides, are in :mod:`search.verify`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.colour import (
    COLOUR_SIZE,
    background_mask,
    colour_descriptor,
    foreground_weights,
)
from embedding.preprocess import pad_to_square
from search.scene import at_verify_size, half_size, product_mask
from store.blas import OneThread, ThreadCount, one_blas_thread

TO_HALF = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]])
"""``VERIFY_SIZE`` px -> half px (:func:`search.scene.half_size`), pixel centres as OpenCV's
keypoints and warps place them: half px ``j`` is centred where px ``2j`` and ``2j + 1`` meet, at
``2j + 0.5``. Plain halving (``x / 2``) is a quarter pixel off at each end, which cancels in
a mapping that keeps the photo's orientation and size and adds up to half a pixel in one
that turns or mirrors it (or enlarges a small photo threefold): along small print, enough to
read as another print (a quarter-turned re-shoot's print agreement fell from 0.93 to 0.42;
docs/matching.md, "Pixel centres")."""
TO_HALF.setflags(write=False)
FROM_HALF = np.linalg.inv(TO_HALF)
"""Half px -> ``VERIFY_SIZE`` px (the inverse of :data:`TO_HALF`)."""
FROM_HALF.setflags(write=False)

MAX_FEATURES = 800
SIFT_CONTRAST = 0.02
"""SIFT's contrast threshold (OpenCV's default is 0.04): half the default finds about twice
the keypoints on a plain garment or a small, soft photo (a 28 px article enlarged),
where the default found too few to match; a busy photo keeps its ``MAX_FEATURES`` strongest
as before (docs/matching.md, "Square-on fronts and fainter keypoints")."""

RATIO = 0.75
"""Lowe's ratio test: a match counts when its best distance is < RATIO x the second best."""

RANSAC_PX = 6.0
"""Largest reprojection error (px at ``VERIFY_SIZE``) of a homography inlier."""
RANSAC_ITERATIONS = 2000
"""RANSAC's most samples (OpenCV's default), when a caller can use any count of inliers."""
LEAST_CONFIDENCE = 0.999
"""For a caller that can use no fewer than some count of inliers (:func:`ransac`'s
``least``): the confidence of drawing one sample of four of them, had the pair that many,
at which RANSAC stops (:func:`_samples_for`)."""
COPIES_MIN_INLIERS = 24
"""Inliers a match for copies (:func:`ransac` with ``copies``: a shelf or a pile showing the
product several times) must find to count. Matched one way, several of the query's
keypoints may take one of the listing's, so chance finds more than it finds both ways: over
the 2,412 pairs of luma-views' re-ranking, at most 13 where both ways found fewer than 12;
twice the re-ranking's 12 (docs/matching.md, "Shelves and piles")."""
COPY_MIN_INLIERS = 10
"""Inliers a further copy of the product needs to add to a match for copies (:func:`ransac`
with ``copies``), and at least ``COPY_SHARE`` of what the first copy has: each copy on a
shelf or in a bin then adds its own, so a pack shown six times counts more than one shown
once at the end of the row (docs/matching.md, "Every copy counted"). 10: the verifier's floor."""
COPY_SHARE = 0.5
"""What a further copy must have of the first copy's inliers to count. Copies of one pack are
alike and read alike; what one photo of one product leaves after its first copy (the repeated
lines of its print, a look-alike's layout matched in part) reads well under half (10-16 inliers
after 38-49 on same-item-packs' look-alikes, where any further copy of 10 lost 4 queries)."""
MAX_COPIES = 8
"""Copies a match for copies looks for at most (one RANSAC each, and one that finds none)."""

ECC_STEPS = 40
"""Iterations of the keypoint-free alignment's ECC refinement (:func:`coarse_homography`)."""
REFINE_STEPS = 30
"""Iterations of the ECC refinement of a keypoint mapping (:func:`refine_homography`):
~5-10 ms a pair."""

KeypointMatch = tuple[int, NDArray[np.float64] | None, NDArray[np.float32]]
"""(inliers, homography or None, the inliers' positions in the listing photo, px)."""


@dataclass(frozen=True)
class PhotoFeatures:
    """What verification needs of one photo, computed once (and cached for gallery photos)."""

    points: NDArray[np.float32]
    """(n, 2) keypoint positions in px at ``VERIFY_SIZE``."""
    descriptors: NDArray[np.float32] | None
    colour: NDArray[np.float32]
    small: NDArray[np.uint8]
    """The photo at half ``VERIFY_SIZE`` (RGB), for the aligned comparison."""
    product: NDArray[np.bool_] | None = None
    """Where ``small`` shows the product, segmented (:func:`product_mask`) when its border
    does not tell the background (a photo re-shot on a backdrop); None when it does."""
    grey: NDArray[np.uint8] | None = None
    """The grey photo at ``VERIFY_SIZE``, kept for a query photo only (``keep_grey``): it marks
    the photo whose keypoints may be mirrored, so that a re-listing that mirrors it can be
    matched (:func:`mirrored`, :func:`unmirror`, which read its width only)."""

    @cached_property
    def foreground(self) -> NDArray[np.bool_]:
        """Where ``small`` shows something other than its background
        (:func:`embedding.colour.foreground_weights` over a half), as :func:`align` compares
        a listing photo: computed at first use and kept with the features, so once per listing
        photo while the verifier caches it, not once per pair. Read-only."""
        out: NDArray[np.bool_] = foreground_weights(self.small) > 0.5
        out.setflags(write=False)
        return out

    @cached_property
    def silhouette(self) -> Silhouette | None:
        """The photo's product as :func:`silhouette_agreement` compares it (None when the
        photo shows none to compare), computed at first use and kept with the features: once
        per query photo, and once per listing photo while the verifier caches it."""
        return _silhouette(self)

@dataclass(frozen=True)
class SilhouetteAgreement:
    """How two photos of plain products compare without keypoints or an alignment
    (:func:`silhouette_agreement`): the evidence of :meth:`SameItemRule.decide_silhouette`."""

    overlap: float
    """Intersection over union of the two products' masks, each scaled to its bounding box
    at ``OUTLINE_PX`` square (the shape, whatever its size and place in the photo)."""
    chroma: float
    """Largest difference, over the channels, of the two products' median colours each
    divided by its channel sum (the colour whatever its brightness)."""
    brightness: float
    """The query product's median brightness over the listing's."""
    keypoints: int
    """SIFT keypoints on the listing's product."""
    saturation: float
    """How far the listing product's median colour is from grey: (max - min) / max of its
    channels (0 for grey, black or white)."""


OUTLINE_PX = 64
"""Side of the square each product's mask is scaled to (:attr:`SilhouetteAgreement.overlap`)."""
MIN_OUTLINE_PIXELS = 64
"""Fewest product pixels (at half ``VERIFY_SIZE``) :func:`silhouette_agreement` compares."""


def silhouette_agreement(query: PhotoFeatures, other: PhotoFeatures
                         ) -> SilhouetteAgreement | None:
    """The outline and colour of the two photos' products compared
    (:class:`SilhouetteAgreement`); None when either photo shows no product to compare (found
    neither by its segmentation nor by its background)."""
    mine, theirs = query.silhouette, other.silhouette
    if mine is None or theirs is None:
        return None
    union = max(int(np.count_nonzero(mine.outline | theirs.outline)), 1)
    sums = (max(float(mine.median.sum()), 1.0), max(float(theirs.median.sum()), 1.0))
    chroma = float(np.abs(mine.median / sums[0] - theirs.median / sums[1]).max())
    saturation = float(np.ptp(theirs.median) / max(float(theirs.median.max()), 1.0))
    return SilhouetteAgreement(int(np.count_nonzero(mine.outline & theirs.outline)) / union,
                               chroma, sums[0] / sums[1], theirs.keypoints, saturation)


@dataclass(frozen=True)
class Silhouette:
    """One photo's product as :func:`silhouette_agreement` compares it
    (:attr:`PhotoFeatures.silhouette`)."""

    outline: NDArray[np.bool_]
    """The product's mask cropped to its bounding box and scaled to ``OUTLINE_PX`` square."""
    median: NDArray[np.float32]
    """The median colour (RGB) of the product's pixels."""
    keypoints: int
    """SIFT keypoints on the product."""


def _silhouette(features: PhotoFeatures) -> Silhouette | None:
    """:attr:`PhotoFeatures.silhouette`: read where the photo (at half ``VERIFY_SIZE``) shows
    its product, its segmented mask or else what is not background, with the tolerance
    fitted to a one-colour backdrop (:func:`embedding.colour.background_mask` with ``snug``:
    a product near its backdrop's colour keeps its outline); None when too little is found. Not
    :func:`embedding.colour.foreground_weights`, whose centred ellipse where no background is
    told would pass for an outline."""
    if features.product is not None:
        mask = features.product
    else:
        background = background_mask(features.small, snug=True)
        if background is None:
            return None
        mask = ~background
    if np.count_nonzero(mask) < MIN_OUTLINE_PIXELS:
        return None
    height, width = mask.shape
    points = np.clip((features.points / 2).astype(np.int64), 0, [width - 1, height - 1])
    keypoints = int(np.count_nonzero(mask[points[:, 1], points[:, 0]])) if len(points) else 0
    median = np.median(features.small[mask].astype(np.float32), axis=0).astype(np.float32)
    return Silhouette(_outline(mask), median, keypoints)


def _outline(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` cropped to its bounding box and scaled to ``OUTLINE_PX`` square."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.uint8) * 255
    scaled = cv2.resize(box, (OUTLINE_PX, OUTLINE_PX), interpolation=cv2.INTER_AREA)
    out: NDArray[np.bool_] = scaled > 127
    return out


def _opencv_threads() -> ThreadCount:
    """OpenCV's (set, get) of its process-wide thread count."""
    return cv2.setNumThreads, cv2.getNumThreads


one_cv_thread = OneThread(_opencv_threads, "OpenCV")
"""OpenCV in one thread while :class:`search.verify.SameItemVerifier` compares a query with
candidates (price comparison's verification, and the keypoint matches and votes that re-rank a
scene photo's search; :mod:`store.blas`): their warps, blurs and fits are of 160-320 px photos,
where handing work to the pool's threads costs more CPU than it saves. A query's own keypoints
are computed outside it, with the pool, unless another thread is verifying meanwhile (the count
is process-wide): then they too run in one thread, slower, the same arrays (docs/matching.md,
"Mirrored keypoints and one OpenCV thread")."""

_sift_lock = threading.Lock()
_sift_by_thread: dict[int, Any] = {}


def _sift() -> Any:
    """One SIFT detector per thread (OpenCV detectors are not safe to share)."""
    ident = threading.get_ident()
    with _sift_lock:
        if ident not in _sift_by_thread:
            _sift_by_thread[ident] = cv2.SIFT.create(nfeatures=MAX_FEATURES,
                                                     contrastThreshold=SIFT_CONTRAST)
        return _sift_by_thread[ident]


def photo_features(image: Image.Image, keep_grey: bool = False,
                   segment: bool = True) -> PhotoFeatures:
    """Keypoints and descriptors at ``VERIFY_SIZE``, and the foreground colour histogram
    (``keep_grey``: also the grey photo, for a query photo; see :func:`mirrored`).
    ``segment=False`` leaves out the product mask (``product`` None), about half the cost
    of a photo with no telling border (GrabCut): for keypoint matching alone
    (:meth:`SameItemVerifier.keypoint_matches`, as search re-ranks), never for a photo
    to verify."""
    rgb = at_verify_size(image)
    gray = np.asarray(rgb.convert("L"), dtype=np.uint8)
    keypoints, descriptors = _sift().detectAndCompute(gray, None)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
    colour = colour_descriptor(np.asarray(pad_to_square(rgb, COLOUR_SIZE), dtype=np.uint8))
    small_rgb = half_size(rgb)
    return PhotoFeatures(points, descriptors if len(points) else None, colour, small_rgb,
                         product_mask(small_rgb) if segment else None,
                         gray if keep_grey else None)


def mirrored(features: PhotoFeatures) -> PhotoFeatures | None:
    """The keypoints of ``features``' photo mirrored left to right (None without its grey
    photo, which only a query photo keeps). A shop may re-list a flipped photo, and SIFT does
    not match a mirror image. Its geometric match is mapped back onto the photo as it is by
    :func:`unmirror`.

    SIFT is symmetric under a flip but for ties and rounding, so the keypoints are the photo's
    own, moved and with their descriptors mirrored (:data:`_MIRRORED_BINS`), not found again
    on the flipped photo (18 ms a query photo, measured on same-item-heldout). Matched
    against SIFT run on the flipped photo, 86-95 % of them find their own mirror image
    (mutual nearest descriptors, at the same place; 8 query photos of same-item-heldout); the
    rest differ by an orientation rounded the other way or the 800-keypoint cut. OpenCV
    places a keypoint a quarter pixel right of (and below) the pixel it describes (its first
    octave is the photo doubled), so the flip of a ``width`` px photo moves it to
    ``width - 0.5 - x``, not ``width - 1 - x``."""
    if features.grey is None:
        return None
    points = features.points.copy()
    points[:, 0] = features.grey.shape[1] - 0.5 - points[:, 0]
    descriptors = (None if features.descriptors is None
                   else np.ascontiguousarray(features.descriptors[:, _MIRRORED_BINS]))
    return replace(features, points=points, descriptors=descriptors, grey=None)


def _mirrored_bins() -> NDArray[np.intp]:
    """For each entry of a SIFT descriptor of the mirrored keypoint, the entry of the
    keypoint's own descriptor it equals. OpenCV lays a descriptor out as 4 x 4 cells across
    and along the keypoint's orientation, 8 gradient directions each (index
    ``(4 * row + col) * 8 + bin``); a flip reverses the rows and turns each direction ``bin``
    into ``-bin``. A permutation that is its own inverse."""
    row, col, direction = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    out = np.empty(128, np.intp)
    out[((3 - row) * 4 + col) * 8 + (8 - direction) % 8] = (row * 4 + col) * 8 + direction
    return out


_MIRRORED_BINS = _mirrored_bins()
""":func:`_mirrored_bins`, computed once: ``descriptors[:, _MIRRORED_BINS]`` mirrors them."""


def unmirror(match: KeypointMatch, width: int) -> KeypointMatch:
    """A match of the mirrored photo as a mapping of the photo itself: the flip of the grey
    photo whose keypoints were mirrored (``width`` px at ``VERIFY_SIZE``), exact in the
    pixel centres :data:`TO_HALF` keeps: a flip off by half a pixel reads as a colour shift
    along every edge of a busy photo."""
    inliers, homography, points = match
    if homography is None:
        return match
    flip = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return inliers, homography @ flip, points


def geometric_inliers(a: PhotoFeatures, b: PhotoFeatures
                      ) -> tuple[int, NDArray[np.float64] | None]:
    """Matches of ``a`` and ``b`` consistent with one RANSAC homography, and that homography
    (``a`` -> ``b`` px at ``VERIFY_SIZE``); (0, None) when there are too few."""
    count, homography, _ = ransac(a, b)
    return count, homography


def ransac(a: PhotoFeatures, b: PhotoFeatures, copies: bool = False, least: int = 0
           ) -> KeypointMatch:
    """:func:`geometric_inliers`, with the inliers' positions in ``b`` (px). ``copies``: ``a``
    may show ``b``'s product several times (a shelf of one pack, a bin of it). Then each of
    ``b``'s keypoints has a near-equal match on every copy, the ratio test from ``b``'s side
    refuses them all, and mutual matching finds next to nothing. So the pair is matched again
    one way (``a``'s keypoints passing the ratio test in ``b``), copy by copy
    (:func:`_copies`), each copy's inliers counted once per keypoint of ``b``. One copy is
    taken where mutual matching finds fewer than ``COPIES_MIN_INLIERS`` and it finds that
    many; two copies or more where their inliers, added up, are that many and more than the
    match otherwise taken (the homography is then the first copy's, the positions all
    theirs). ``least``: the fewest inliers the caller can use (the mirrored route's
    ``min_inliers``; 0: any count, as a decision reads them): a pair with fewer mutual
    matches has no match, and RANSAC draws only the samples that find that many inliers at
    ``LEAST_CONFIDENCE`` (:func:`_samples_for`). Below that share of inliers it found nothing
    useful in its 2,000 samples anyway, and those were most of its cost: a look-alike's
    mirrored keypoints, 10-40 chance matches, took 3-5 ms a pair (without ``copies``)."""
    none = np.zeros((0, 2), np.float32)
    if a.descriptors is None or b.descriptors is None or len(a.points) < 4 or len(b.points) < 2:
        return 0, None, none
    squared = _squared_distances(a.descriptors, b.descriptors)
    mutual = _mutual_pairs(squared)
    if len(mutual) < least:
        return 0, None, none
    match = _homography(a.points, b.points, mutual, _samples_for(len(mutual), least))
    if not copies:
        return match
    one_way = list(_ratio_pairs(squared).items())
    if len(one_way) < max(COPIES_MIN_INLIERS, match[0] + 1):  # nothing it finds can count
        return match
    found = _copies(a.points, b.points, one_way)
    if found and match[0] < COPIES_MIN_INLIERS <= found[0][0]:
        match = found[0]
    total = sum(count for count, _, _ in found)
    if len(found) > 1 and total >= COPIES_MIN_INLIERS and total > match[0]:
        return total, found[0][1], np.concatenate([points for _, _, points in found])
    return match


def _copies(a: NDArray[np.float32], b: NDArray[np.float32], pairs: list[tuple[int, int]]
            ) -> list[KeypointMatch]:
    """The copies of ``b``'s product in ``a`` that one-way ``pairs`` show, each a match of its
    own: RANSAC's homography through the pairs, then through those left where no copy found
    lies (their point of ``a`` mapped outside the extent of ``b``'s points by every copy's
    homography), and so on (``MAX_COPIES`` at most), while a copy has ``COPY_MIN_INLIERS``
    inliers and a further one ``COPY_SHARE`` of the first copy's too (none when the first
    has fewer). A photo of one product leaves few pairs off its one copy, and RANSAC over
    chance pairs is what costs."""
    out: list[KeypointMatch] = []
    left = pairs
    low, high = b.min(axis=0), b.max(axis=0)
    for _ in range(MAX_COPIES):
        floor = max(COPY_MIN_INLIERS, COPY_SHARE * out[0][0]) if out else COPY_MIN_INLIERS
        if len({j for _, j in left}) < floor:  # a copy counts no more
            break
        count, homography, inliers = _fit(a, b, left)
        if homography is None or count < floor:
            break
        out.append((count, homography, b[[j for _, j in left]][inliers]))
        mapped = cv2.perspectiveTransform(
            a[[i for i, _ in left]].reshape(-1, 1, 2).astype(np.float64), homography
        ).reshape(-1, 2)
        on_it = inliers | np.all((mapped >= low) & (mapped <= high), axis=1)
        left = [pair for pair, taken in zip(left, on_it.tolist(), strict=True) if not taken]
    return out


def _samples_for(pairs: int, least: int) -> int:
    """RANSAC's most samples for ``pairs`` one-to-one matches of which the caller can use
    ``least`` inliers or more (0: any count; ``RANSAC_ITERATIONS``): enough to draw four of
    ``least`` inliers at ``LEAST_CONFIDENCE``, had the pair that many."""
    if least <= 0:
        return RANSAC_ITERATIONS
    share = min(least / max(pairs, 1), 0.999)
    needed = math.log(1.0 - LEAST_CONFIDENCE) / math.log(1.0 - share**4)
    return max(1, min(RANSAC_ITERATIONS, math.ceil(needed)))


def _homography(a: NDArray[np.float32], b: NDArray[np.float32], pairs: list[tuple[int, int]],
                samples: int = RANSAC_ITERATIONS) -> KeypointMatch:
    """The RANSAC homography through matched keypoint ``pairs`` (indices into the points ``a``
    and ``b``): its inliers, counted once per point of ``b`` (pairs matched one way may share
    one), the homography, and the inliers' positions in ``b``; (0, None, none) when there
    are too few pairs or the homography is implausible; ``samples``: RANSAC's most)."""
    count, homography, inliers = _fit(a, b, pairs, samples)
    if homography is None:
        return 0, None, np.zeros((0, 2), np.float32)
    return count, homography, b[[j for _, j in pairs]][inliers]


def _fit(a: NDArray[np.float32], b: NDArray[np.float32], pairs: list[tuple[int, int]],
         samples: int = RANSAC_ITERATIONS
         ) -> tuple[int, NDArray[np.float64] | None, NDArray[np.bool_]]:
    """:func:`_homography`'s count and homography, with which of ``pairs`` are its inliers
    (0, None and none when there are too few pairs or the homography is implausible)."""
    none = np.zeros(len(pairs), np.bool_)
    if len(pairs) < 4:
        return 0, None, none
    src = a[[i for i, _ in pairs]]
    dst = b[[j for _, j in pairs]]
    found, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX, maxIters=samples)
    if found is None or mask is None:
        return 0, None, none
    homography = np.asarray(found, dtype=np.float64)
    if not _plausible(homography):
        return 0, None, none
    inliers: NDArray[np.bool_] = mask.ravel() > 0
    count = len({pairs[k][1] for k in np.nonzero(inliers)[0].tolist()})
    return count, homography, inliers


def _mutual_matches(a: NDArray[np.float32], b: NDArray[np.float32]) -> list[tuple[int, int]]:
    """:func:`_mutual_pairs` of two descriptor sets (none when either has fewer than two)."""
    if len(a) < 2 or len(b) < 2:
        return []
    return _mutual_pairs(_squared_distances(a, b))


def _mutual_pairs(squared: NDArray[np.float32]) -> list[tuple[int, int]]:
    """Index pairs (row, column) of a matrix of ``squared`` descriptor distances that pass
    Lowe's ratio test both ways and are each other's best match. One way only, the repeated
    patches of a watermark or a text all match the same few keypoints of the other photo,
    and RANSAC then fits a degenerate mapping to them. Both ways come from the one matrix
    (:func:`_squared_distances`)."""
    forward, forward_ok = _ratio_test(squared)
    backward, backward_ok = _ratio_test(squared, by_column=True)
    i = np.nonzero(forward_ok)[0]
    j = forward[i]
    keep = backward_ok[j] & (backward[j] == i)
    return list(zip(i[keep].tolist(), j[keep].tolist(), strict=True))


def ratio_passed(x: NDArray[np.float32], y: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Per descriptor of ``x``: whether its nearest in ``y`` passes Lowe's ratio test against
    the second nearest (none pass when ``y`` has fewer than two). Each row is answered on its
    own, so the descriptors of several query photos stacked get their own answers."""
    if len(x) == 0 or len(y) < 2:
        return np.zeros(len(x), np.bool_)
    return _ratio_test(_squared_distances(x, y))[1]


def _ratio_pairs(squared: NDArray[np.float32]) -> dict[int, int]:
    """Each row of a matrix of ``squared`` descriptor distances whose nearest column passes
    Lowe's ratio test -> that column, in row order."""
    nearest, ok = _ratio_test(squared)
    rows = np.nonzero(ok)[0]
    return dict(zip(rows.tolist(), nearest[rows].tolist(), strict=True))


def _squared_distances(x: NDArray[np.float32], y: NDArray[np.float32]) -> NDArray[np.float32]:
    """(len(x), len(y)) squared Euclidean distances of two descriptor sets from one matrix
    product: both directions of a mutual match from one product, at about a third of the CPU
    of OpenCV's brute-force matcher, which computes them pair by pair. Exact in float32:
    OpenCV's SIFT descriptors are whole numbers up to 255, so every dot product and norm is
    a whole number below 2**24 (128 x 255**2), and the matches are the matcher's. In one
    BLAS thread (:mod:`store.blas`). The norms are added in place (whole numbers below 2**24
    in any order: the same matrix), which saves two matrices' passes, ~0.5 ms a pair."""
    with one_blas_thread:
        out: NDArray[np.float32] = x @ y.T
    out *= -2.0
    out += np.einsum("ij,ij->i", x, x)[:, None]
    out += np.einsum("ij,ij->i", y, y)[None, :]
    return np.maximum(out, 0.0, out=out)


def _ratio_test(squared: NDArray[np.float32], by_column: bool = False
                ) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Per row of ``squared`` distances (two columns or more): the nearest column, and whether
    it passes Lowe's ratio test against the second nearest (``RATIO``, on distances).
    ``by_column``: per column, the nearest row (the transpose's answers, reduced down the
    columns instead of along a transposed view's strided rows: ~0.07 ms less a pair)."""
    axis = 0 if by_column else 1
    nearest = squared.argmin(axis=axis)
    across = np.arange(squared.shape[1 - axis])
    at = (nearest, across) if by_column else (across, nearest)
    best = squared[at]
    others = squared.copy()
    others[at] = np.inf
    second = others.min(axis=axis)
    # As the matcher compares: float32 distances, the ratio in float64.
    ok: NDArray[np.bool_] = (np.sqrt(best).astype(np.float64)
                             < RATIO * np.sqrt(second).astype(np.float64))
    return nearest, ok


def in_half_px(homography: NDArray[np.float64]) -> NDArray[np.float64]:
    """A mapping between two photos in ``VERIFY_SIZE`` px as the same mapping between them at
    half size (:data:`TO_HALF`)."""
    out: NDArray[np.float64] = TO_HALF @ homography @ FROM_HALF
    return out

def coarse_homography(a: PhotoFeatures, b: PhotoFeatures) -> NDArray[np.float64] | None:
    """A mapping ``a`` -> ``b`` (px at ``VERIFY_SIZE``) found without keypoints, for plain
    products that have none: the foreground masks' centroids and areas give a similarity
    transform, which ECC (OpenCV's enhanced correlation, affine) refines on the grey levels
    at a quarter of ``VERIFY_SIZE``. None when a mask is empty or ECC does not converge.
    Alignment alone proves nothing here (a plain product fits another of its shape): the
    stricter aligned checks of :meth:`SameItemRule._decide_coarse` decide."""
    def quarter(rgb: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        h, w = rgb.shape[:2]
        if w >= 16 and h >= 16:  # exactly half again (TO_HALF twice)
            rgb = rgb[: h - h % 2, : w - w % 2]
        img = np.asarray(cv2.resize(rgb, (max(8, w // 2), max(8, h // 2)),
                                    interpolation=cv2.INTER_AREA), dtype=np.uint8)
        grey = np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), dtype=np.float32)
        return grey, (foreground_weights(img) > 0.5).astype(np.uint8)

    grey_a, mask_a = quarter(a.small)
    grey_b, mask_b = quarter(b.small)
    moments_a, moments_b = cv2.moments(mask_a, True), cv2.moments(mask_b, True)
    if moments_a["m00"] < 16 or moments_b["m00"] < 16:
        return None
    scale = float(np.sqrt(moments_a["m00"] / moments_b["m00"]))  # b px -> a px
    ca = np.array([moments_a["m10"], moments_a["m01"]]) / moments_a["m00"]
    cb = np.array([moments_b["m10"], moments_b["m01"]]) / moments_b["m00"]
    warp = np.array([[scale, 0.0, ca[0] - scale * cb[0]],
                     [0.0, scale, ca[1] - scale * cb[1]]], dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_STEPS, 1e-4)
    try:  # warp maps b (template) px to a (input) px
        # No mask: OpenCV 5 asserts on one whenever the two images differ in size.
        _, refined = cv2.findTransformECC(  # type: ignore[call-overload]
            grey_b, grey_a, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        return None
    b_to_a = np.vstack([np.asarray(refined, dtype=np.float64), [0.0, 0.0, 1.0]])
    quarter_px = TO_HALF @ TO_HALF  # VERIFY_SIZE px -> quarter px
    homography = np.linalg.inv(quarter_px) @ np.linalg.inv(b_to_a) @ quarter_px
    return homography if _plausible(homography) else None

def refine_homography(a: PhotoFeatures, b: PhotoFeatures, homography: NDArray[np.float64]
                      ) -> NDArray[np.float64] | None:
    """``homography`` (``a`` -> ``b``, px at ``VERIFY_SIZE``) refined on the two photos' grey
    levels at half ``VERIFY_SIZE`` (OpenCV's ECC over a full homography,
    ``REFINE_STEPS``); None when ECC fails or the result is not :func:`_plausible`. RANSAC
    fits the keypoints only within ``RANSAC_PX``: a mapping a pixel off along a
    high-contrast outline (a blue top on white) moves the colour shift's high percentiles and
    the correlation past their limits for an unedited copy turned a quarter
    (docs/matching.md, "Refined alignment and colour grading")."""
    b_to_a = np.linalg.inv(in_half_px(homography))
    grey_a, grey_b = (np.asarray(cv2.cvtColor(x.small, cv2.COLOR_RGB2GRAY), dtype=np.float32)
                      for x in (a, b))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, REFINE_STEPS, 1e-5)
    try:  # the warp maps b (template) px to a (input) px
        _, refined = cv2.findTransformECC(  # type: ignore[call-overload]
            grey_b, grey_a, (b_to_a / b_to_a[2, 2]).astype(np.float32),
            cv2.MOTION_HOMOGRAPHY, criteria, None, 1)
    except cv2.error:
        return None
    out = FROM_HALF @ np.linalg.inv(np.asarray(refined, dtype=np.float64)) @ TO_HALF
    return out if _plausible(out) else None


def _plausible(homography: NDArray[np.float64]) -> bool:
    """A mapping an edit could make: no mirror, no collapse, at most 8x scale change."""
    det = float(np.linalg.det(homography[:2, :2]))
    return 1 / 64 < det < 64
